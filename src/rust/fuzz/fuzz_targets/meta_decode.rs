//! Decodes arbitrary meta blobs (object metadata v2, `format::meta`). Must
//! never panic, recurse deeply or allocate more than the input can justify;
//! whatever decodes must re-encode to the same bytes and decode again to the
//! same value.
//!
//! Input: first byte = number of blocks the catalog entry claims (0..=255),
//! the rest is the meta blob. Half of the inputs get a valid v2 header and
//! summary prepended so the fuzzer spends its time in the node stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rfmalloc::format::meta::{decode, decode_summary, encode, Summary, Writer};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n_blocks = usize::from(first >> 1);
    let blob = if first & 1 == 0 {
        rest.to_vec()
    } else {
        let summary = Summary {
            type_name: "list".into(),
            class: "list".into(),
            length: 1.0,
            dim: None,
        };
        let mut b = Writer::new(&summary).unwrap().finish();
        b.extend_from_slice(rest);
        b
    };
    let _ = decode_summary(&blob);
    if let Ok(meta) = decode(&blob, n_blocks) {
        let again = encode(&meta).expect("a decoded meta encodes");
        // Doubles compare by bits: NaN payloads must survive.
        assert_eq!(again, blob, "re-encoding changed the bytes");
        assert!(decode(&again, n_blocks).is_ok());
    }
});
