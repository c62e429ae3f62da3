package scheduler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
)

// CatchUp says what the daemon does about runs a job missed while it was down.
type CatchUp string

// CatchUp policies.
const (
	CatchUpSkip CatchUp = "skip" // wait for the next scheduled time
	CatchUpOnce CatchUp = "once" // run once at start-up, however many runs were missed
)

// ParseCatchUp checks a catch-up policy.
func ParseCatchUp(s string) (CatchUp, error) {
	switch c := CatchUp(s); c {
	case CatchUpSkip, CatchUpOnce:
		return c, nil
	}
	return "", fmt.Errorf("catch_up %q: use skip or once", s)
}

// ConfigFile is the optional scheduler-side settings file in the jobs directory:
//
//	jobs:
//	  churn: {catch_up: once}
//
// It is not a job file: the daemon never runs it.
const ConfigFile = "schedule.yaml"

// fileConfig is ConfigFile, decoded.
type fileConfig struct {
	Jobs map[string]struct {
		CatchUp string `yaml:"catch_up"`
	} `yaml:"jobs"`
}

// loadFileConfig reads DIR/schedule.yaml; a missing file is no settings.
func loadFileConfig(dir string) (map[string]CatchUp, error) {
	path := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]CatchUp{}
	var problems []error
	for name, j := range fc.Jobs {
		if j.CatchUp == "" {
			continue
		}
		c, err := ParseCatchUp(j.CatchUp)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: jobs.%s.%w", path, name, err))
			continue
		}
		out[name] = c
	}
	return out, errors.Join(problems...)
}

// state is what the daemon remembers between restarts: when each job last came due.
// It lives in one small JSON file, replaced atomically (write a temporary file, rename).
type state struct {
	path string              // "" keeps state in memory only
	Jobs map[string]jobState `json:"jobs"`
}

type jobState struct {
	// LastDue is the last scheduled time the daemon handled (ran or skipped).
	LastDue time.Time `json:"last_due"`
	// LastSuccess is when the last successful run finished; zero if never.
	LastSuccess time.Time `json:"last_success,omitzero"`
}

// StateFile is the file the daemon keeps in its --state directory.
const StateFile = "schedule-state.json"

func loadState(dir string) (*state, error) {
	s := &state{Jobs: map[string]jobState{}}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	s.path = filepath.Join(dir, StateFile)
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("read state %s: %w (delete it to start afresh)", s.path, err)
	}
	if s.Jobs == nil {
		s.Jobs = map[string]jobState{}
	}
	return s, nil
}

func (s *state) save() error {
	if s.path == "" {
		return nil
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}
