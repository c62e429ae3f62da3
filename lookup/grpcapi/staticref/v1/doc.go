// Package staticrefv1 is the generated code of the lookup API over gRPC,
// staticref.v1.Lookup (lookup.proto beside it; `make proto` regenerates it with protoc,
// protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.6.2). The service itself is
// lookup.Service (lookup/grpc.go). Nothing but generated code belongs here: edit the
// .proto and regenerate.
package staticrefv1
