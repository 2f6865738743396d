use super::*;

fn summary() -> Summary {
    Summary {
        type_name: "list".into(),
        class: "data.frame".into(),
        length: 3.0,
        dim: Some("3x2".into()),
    }
}

fn leaf(payload: Payload) -> Node {
    Node {
        payload,
        s4: false,
        attrs: vec![],
        children: vec![],
    }
}

/// A data frame-like list: two block columns (one a factor with inline
/// levels), one inline character column with NA and every encoding, names,
/// compact row names, class, an S4 object, NULL and every inline type.
fn rich() -> Meta {
    let mut nodes = vec![
        // 0: the root list; elements 1, 2, 3, 4, 5; attrs names (6), row.names (7), class (8)
        Node {
            payload: Payload::List(5),
            s4: false,
            attrs: vec![
                (b"names".to_vec(), 6),
                (b"row.names".to_vec(), 7),
                (b"class".to_vec(), 8),
            ],
            children: vec![1, 2, 3, 4, 5],
        },
        leaf(Payload::Block {
            index: 0,
            elem: ElemType::Double,
        }),
        Node {
            payload: Payload::Block {
                index: 1,
                elem: ElemType::Integer,
            },
            s4: false,
            attrs: vec![(b"levels".to_vec(), 9), (b"class".to_vec(), 10)],
            children: vec![],
        },
        leaf(Payload::Character(vec![
            Some((b"a".to_vec(), Encoding::Native)),
            None,
            Some(("caf\u{e9}".as_bytes().to_vec(), Encoding::Utf8)),
            Some((vec![0xe9], Encoding::Latin1)),
            Some((vec![0xff, 0xfe], Encoding::Bytes)),
        ])),
        leaf(Payload::Null),
        Node {
            payload: Payload::S4Object,
            s4: true,
            attrs: vec![(b"x".to_vec(), 11)],
            children: vec![],
        },
        leaf(Payload::Character(vec![
            Some((b"a".to_vec(), Encoding::Native)),
            Some((b"f".to_vec(), Encoding::Native)),
            Some((b"s".to_vec(), Encoding::Native)),
            Some((b"n".to_vec(), Encoding::Native)),
            Some((b"o".to_vec(), Encoding::Native)),
        ])),
        leaf(Payload::Integer(vec![i32::MIN, -3])),
        leaf(Payload::Character(vec![Some((
            b"data.frame".to_vec(),
            Encoding::Native,
        ))])),
        leaf(Payload::Character(vec![
            Some((b"u".to_vec(), Encoding::Native)),
            Some((b"v".to_vec(), Encoding::Native)),
        ])),
        leaf(Payload::Character(vec![Some((
            b"factor".to_vec(),
            Encoding::Native,
        ))])),
        // 11: a list of every other inline type
        Node {
            payload: Payload::List(4),
            s4: false,
            attrs: vec![],
            children: vec![12, 13, 14, 15],
        },
        leaf(Payload::Logical(vec![1, 0, i32::MIN])),
        leaf(Payload::Double(vec![
            1.5,
            f64::from_bits(0x7FF0_0000_0000_07A2),
            -0.0,
        ])),
        leaf(Payload::Complex(vec![[1.0, -2.0]])),
        leaf(Payload::Raw(vec![0, 255])),
    ];
    nodes[5].s4 = true;
    Meta {
        summary: summary(),
        nodes,
    }
}

/// Decoded nodes are in stream (pre-order) order; `rich()` lists them in
/// another order, so compare the trees, not the arenas.
fn same_tree(a: &Meta, ia: usize, b: &Meta, ib: usize) -> bool {
    let mut todo = vec![(ia, ib)];
    while let Some((i, j)) = todo.pop() {
        let (x, y) = (&a.nodes[i], &b.nodes[j]);
        let payload_eq = match (&x.payload, &y.payload) {
            // Bit patterns (NA payloads, -0.0).
            (Payload::Double(p), Payload::Double(q)) => p
                .iter()
                .map(|v| v.to_bits())
                .eq(q.iter().map(|v| v.to_bits())),
            (p, q) => p == q,
        };
        if !payload_eq || x.s4 != y.s4 || x.attrs.len() != y.attrs.len() {
            return false;
        }
        if x.children.len() != y.children.len() {
            return false;
        }
        for ((ka, va), (kb, vb)) in x.attrs.iter().zip(&y.attrs) {
            if ka != kb {
                return false;
            }
            todo.push((*va, *vb));
        }
        todo.extend(x.children.iter().copied().zip(y.children.iter().copied()));
    }
    true
}

#[test]
fn round_trip() {
    let m = rich();
    let bytes = encode(&m).unwrap();
    let back = decode(&bytes, 2).unwrap();
    assert_eq!(back.summary, m.summary);
    assert_eq!(back.nodes.len(), m.nodes.len());
    assert!(same_tree(&m, 0, &back, 0));
    // Decoded nodes point forward only (what the R layer relies on).
    for (i, n) in back.nodes.iter().enumerate() {
        assert!(n
            .children
            .iter()
            .chain(n.attrs.iter().map(|(_, v)| v))
            .all(|&c| c > i));
    }
    // Stable: re-encoding the decoded form gives the same bytes.
    assert_eq!(encode(&back).unwrap(), bytes);
    assert_eq!(decode_summary(&bytes).unwrap(), m.summary);
}

#[test]
fn summary_without_dim_and_simple_values() {
    let m = Meta {
        summary: Summary {
            type_name: "integer".into(),
            class: "integer".into(),
            length: 2f64.powi(31) + 10.0,
            dim: None,
        },
        nodes: vec![leaf(Payload::Block {
            index: 0,
            elem: ElemType::Integer,
        })],
    };
    let bytes = encode(&m).unwrap();
    assert_eq!(decode(&bytes, 1).unwrap(), m);
    assert_eq!(decode_summary(&bytes).unwrap().length, 2f64.powi(31) + 10.0);
    let null = Meta {
        summary: summary(),
        nodes: vec![leaf(Payload::Null)],
    };
    assert_eq!(decode(&encode(&null).unwrap(), 0).unwrap(), null);
}

#[test]
fn blocks_must_be_used_exactly_once() {
    let bytes = encode(&rich()).unwrap();
    assert!(decode(&bytes, 1).unwrap_err().contains("block 2 of 1"));
    assert!(decode(&bytes, 3).unwrap_err().contains("not used"));
    let mut twice = rich();
    twice.nodes[2].payload = Payload::Block {
        index: 0,
        elem: ElemType::Integer,
    };
    let err = decode(&encode(&twice).unwrap(), 2).unwrap_err();
    assert!(err.contains("used twice"), "{err}");
}

#[test]
fn every_truncation_is_a_clean_error() {
    let bytes = encode(&rich()).unwrap();
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len], 2).is_err(), "prefix {len} accepted");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&longer, 2).unwrap_err().contains("stray"));
}

#[test]
fn every_byte_flip_is_ok_or_a_clean_error() {
    let bytes = encode(&rich()).unwrap();
    for i in 0..bytes.len() {
        for x in [0x01u8, 0x80, 0xFF, 0x7F, 0x10] {
            let mut b = bytes.clone();
            b[i] ^= x;
            // Must not panic; may be accepted (e.g. a changed data byte).
            let _ = decode(&b, 2);
            let _ = decode_summary(&b);
        }
    }
}

#[test]
fn version_1_is_refused_by_its_version() {
    let mut v1 = META_MAGIC.to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&4u32.to_le_bytes());
    v1.extend_from_slice(b"X\n\0\0rest of an R serialize() stream");
    for err in [
        decode(&v1, 0).unwrap_err(),
        decode_summary(&v1).unwrap_err(),
    ] {
        assert!(err.contains("version 1"), "{err}");
    }
    assert_eq!(version(&v1), Ok(1));
    let mut v9 = encode(&rich()).unwrap();
    v9[4] = 9;
    assert!(decode(&v9, 2).unwrap_err().contains("version 9"));
    assert!(decode(b"RFMX\x02\0\0\0\0\0\0\0", 0)
        .unwrap_err()
        .contains("header"));
}

/// A meta whose body is `depth` nested one-element lists around NULL.
fn nested(depth: usize) -> Vec<u8> {
    let mut w = Writer::new(&summary()).unwrap();
    for _ in 0..depth {
        w.node(&Payload::List(1), false, 0).unwrap();
    }
    w.node(&Payload::Null, false, 0).unwrap();
    w.finish()
}

#[test]
fn deep_nesting_is_bounded_without_recursion() {
    let ok = decode(&nested(MAX_DEPTH), 0).unwrap();
    assert_eq!(ok.nodes.len(), MAX_DEPTH + 1);
    for depth in [MAX_DEPTH + 1, 100_000, 1_000_000] {
        let err = decode(&nested(depth), 0).unwrap_err();
        assert!(err.contains("nested deeper than 1000"), "{err}");
    }
    // Through attributes too: x with attribute a whose value has attribute a ...
    let mut w = Writer::new(&summary()).unwrap();
    w.node(&Payload::Raw(vec![]), false, 1).unwrap();
    for _ in 0..5000 {
        w.attr_name(b"a").unwrap();
        w.node(&Payload::Raw(vec![]), false, 1).unwrap();
    }
    w.attr_name(b"a").unwrap();
    w.node(&Payload::Raw(vec![]), false, 0).unwrap();
    assert!(decode(&w.finish(), 0).unwrap_err().contains("nested"));
}

#[test]
fn huge_declared_counts_are_refused_before_allocating() {
    let head = |kind: u8, n_attrs: u32| {
        let mut w = Writer::new(&summary()).unwrap().finish();
        w.push(kind);
        w.push(0);
        w.extend_from_slice(&n_attrs.to_le_bytes());
        w
    };
    for kind in [
        KIND_LIST, KIND_LGL, KIND_INT, KIND_DBL, KIND_CPLX, KIND_RAW, KIND_STR,
    ] {
        for n in [u64::MAX, 1 << 40, 1000] {
            let mut b = head(kind, 0);
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&[0u8; 64]);
            let err = decode(&b, 0).unwrap_err();
            assert!(err.contains("count") || err.contains("truncated"), "{err}");
        }
    }
    let mut b = head(KIND_RAW, u32::MAX);
    b.extend_from_slice(&0u64.to_le_bytes());
    assert!(decode(&b, 0).unwrap_err().contains("attribute count"));
    // A string declaring 4 GB.
    let mut b = head(KIND_STR, 0);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(1);
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode(&b, 0).is_err());
    // A summary length past the end.
    let mut b = nested(0);
    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(decode_summary(&b).unwrap_err().contains("summary length"));
}

#[test]
fn bad_values_are_refused() {
    let one = |payload: Payload, attrs: Vec<u8>| {
        let mut w = Writer::new(&summary()).unwrap();
        w.node(&payload, false, u32::from(!attrs.is_empty()))
            .unwrap();
        if !attrs.is_empty() {
            w.attr_name(&attrs).unwrap();
            w.node(&Payload::Null, false, 0).unwrap();
        }
        decode(&w.finish(), 0)
    };
    assert!(one(Payload::Logical(vec![2]), vec![]).is_err());
    assert!(one(
        Payload::Character(vec![Some((b"a\0b".to_vec(), Encoding::Utf8))]),
        vec![]
    )
    .unwrap_err()
    .contains("NUL"));
    assert!(one(Payload::Raw(vec![]), b"a\0".to_vec()).is_err());
    assert!(one(Payload::Raw(vec![]), vec![b'a'; MAX_ATTR_NAME + 1]).is_err());
    assert!(one(Payload::Raw(vec![]), vec![b'a'; MAX_ATTR_NAME]).is_ok());
    // NULL with attributes or flags, unknown kinds and flags.
    let mut b = Writer::new(&summary()).unwrap().finish();
    b.extend_from_slice(&[KIND_NULL, 1, 0, 0, 0, 0]);
    assert!(decode(&b, 0).is_err());
    for (k, f) in [(10u8, 0u8), (KIND_S4OBJ, 2)] {
        let mut b = Writer::new(&summary()).unwrap().finish();
        b.extend_from_slice(&[k, f, 0, 0, 0, 0]);
        assert!(decode(&b, 0).is_err());
    }
    // A summary length of -1 or NaN.
    for len in [-1.0, f64::NAN, f64::INFINITY] {
        let s = Summary {
            length: len,
            ..summary()
        };
        let m = Meta {
            summary: s,
            nodes: vec![leaf(Payload::Null)],
        };
        assert!(decode(&encode(&m).unwrap(), 0).is_err());
    }
}

#[test]
fn summary_lengths_are_whole_numbers_up_to_2_pow_52_and_texts_hold_no_nul() {
    let with = |f: &dyn Fn(&mut Summary)| {
        let mut s = summary();
        f(&mut s);
        let b = Writer::new(&s).unwrap().finish();
        let section = summary_section(&b).map(<[u8]>::to_vec);
        (decode_summary(&b), section)
    };
    for len in [2.5, 1e300, 2f64.powi(53) + 2.0, 2f64.powi(52) + 1.0, 0.5] {
        let (r, section) = with(&|s| s.length = len);
        let why = r.unwrap_err();
        assert!(
            why.contains("not a whole number in [0, 2^52]"),
            "{len}: {why}"
        );
        assert!(section.is_none());
    }
    for len in [0.0, 3e9, 2f64.powi(52)] {
        assert_eq!(with(&|s| s.length = len).0.unwrap().length, len);
    }
    for f in [
        &(|s: &mut Summary| s.type_name = "a\0b".into()) as &dyn Fn(&mut Summary),
        &|s| s.class = "\0".into(),
        &|s| s.dim = Some("2\0x3".into()),
    ] {
        let (r, section) = with(f);
        assert_eq!(r.unwrap_err(), "summary text holds a NUL byte");
        assert!(section.is_none());
    }
}
