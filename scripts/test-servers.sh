#!/usr/bin/env bash
# Installs the object-store servers the tests start (readers/objtest) into a cache dir,
# once: versitygw (S3) and fake-gcs-server (GCS) with `go install`, Azurite with npm when
# npm is there. Prints the environment that points the tests at them, for eval.
set -euo pipefail
tools="${STATICREF_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/staticref-tools}"
mkdir -p "$tools/bin" "$tools/azurite"
if [ ! -x "$tools/bin/versitygw" ]; then
	echo "test-servers: go install versitygw (about 3 minutes, once)" >&2
	GOBIN="$tools/bin" go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 >&2
fi
if [ ! -x "$tools/bin/fake-gcs-server" ]; then
	echo "test-servers: go install fake-gcs-server (about 1.5 minutes, once)" >&2
	GOBIN="$tools/bin" go install github.com/fsouza/fake-gcs-server@v1.56.1 >&2
fi
if [ ! -x "$tools/azurite/node_modules/.bin/azurite" ]; then
	if command -v npm >/dev/null; then
		echo "test-servers: npm install azurite (once)" >&2
		(cd "$tools/azurite" && npm install --no-audit --no-fund azurite@3.35.0 >/dev/null)
	else
		echo "test-servers: no npm: the Azure tests will be skipped (apt-get install npm)" >&2
	fi
fi
for v in "STATICREF_VERSITYGW=$tools/bin/versitygw" "STATICREF_FAKE_GCS=$tools/bin/fake-gcs-server" \
	"STATICREF_AZURITE=$tools/azurite/node_modules/.bin/azurite"; do
	[ -x "${v#*=}" ] && echo "export $v"
done
true
