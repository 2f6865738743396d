//! Catalog of named objects: encoding, decoding, validation.
