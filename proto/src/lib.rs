//! Protobuf wire format.
