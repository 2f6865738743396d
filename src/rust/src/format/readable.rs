//! What makes a decoded object readable: its attributes against what R's
//! `setAttrib()` accepts and what R's methods for its class need (`dim`
//! matching the length, `dimnames` matching `dim`, a factor only on integers
//! with character levels, a data frame's columns as long as its row names,
//! ...). The one owner of these rules: a save refuses what they refuse
//! (before anything is written), a read refuses a stored object that breaks
//! them (`fmalloc_corrupt`, never an R error from deep inside), and
//! `fmalloc_check()` reports it.

use std::collections::HashMap;

use super::meta::{Meta, Node, Payload, Str};
use super::ElemType;
use crate::strpool::{Elt, Encoding};

/// Checks every node of `meta`; `block_len(i)` is the number of elements of
/// block `i` of the object (a block node's length).
pub fn check_object(meta: &Meta, block_len: &dyn Fn(u32) -> u64) -> Result<(), String> {
    let built = |id: usize| match meta.nodes.get(id).map(|n| &n.payload) {
        Some(Payload::Block { index, .. }) => block_len(*index),
        _ => 0,
    };
    for id in 0..meta.nodes.len() {
        check_attrs(meta, id, &built)?;
    }
    Ok(())
}

/// The length of a node's R object (0 for NULL and S4 objects).
fn node_len(meta: &Meta, id: usize, built: &dyn Fn(usize) -> u64) -> u64 {
    match meta.nodes.get(id).map(|n| &n.payload) {
        Some(Payload::Block { .. }) => built(id),
        Some(Payload::List(n)) => *n,
        Some(Payload::Logical(v) | Payload::Integer(v)) => v.len() as u64,
        Some(Payload::Double(v)) => v.len() as u64,
        Some(Payload::Complex(v)) => v.len() as u64,
        Some(Payload::Raw(v)) => v.len() as u64,
        Some(Payload::Character(v)) => v.len() as u64,
        _ => 0,
    }
}

/// The number of rows row names `id` stand for: the compact form
/// `c(NA, n)` (either sign) means |n|, anything else one per element.
/// `None` for row names R would refuse or coerce with a warning (NA in the
/// compact form, doubles that are not whole numbers in R's integer range).
fn row_count(meta: &Meta, id: usize, built: &dyn Fn(usize) -> u64) -> Option<u64> {
    let n = match meta.nodes.get(id).map(|n| &n.payload)? {
        Payload::Integer(r) if r.len() == 2 && r[0] == i32::MIN => {
            if r[1] == i32::MIN {
                return None;
            }
            u64::from(r[1].unsigned_abs())
        }
        Payload::Double(r) => {
            let whole = |x: &f64| x.is_finite() && x.fract() == 0.0 && x.abs() <= i32::MAX as f64;
            if !r.iter().all(whole) {
                return None;
            }
            r.len() as u64
        }
        _ => node_len(meta, id, built),
    };
    (n <= i32::MAX as u64).then_some(n)
}

/// Whether node `id` is a character vector (inline or a string block).
fn is_character(meta: &Meta, id: usize) -> bool {
    matches!(
        meta.nodes.get(id).map(|n| &n.payload),
        Some(Payload::Character(_))
            | Some(Payload::Block {
                elem: ElemType::String,
                ..
            })
    )
}

/// Checks node `id`'s attributes against what R's `setAttrib()` accepts;
/// returns the order to set them in (`dim` first: `dimnames` and `tsp` are
/// checked against it).
pub fn check_attrs(
    meta: &Meta,
    id: usize,
    built: &dyn Fn(usize) -> u64,
) -> Result<Vec<usize>, String> {
    let node = meta.nodes.get(id).ok_or("no such node")?;
    if node.attrs.is_empty() {
        return Ok(Vec::new());
    }
    if matches!(node.payload, Payload::Null) {
        return Err("attributes on NULL".into());
    }
    let len = node_len(meta, id, built);
    let is_vector = !matches!(node.payload, Payload::S4Object);
    let is_integer = matches!(
        node.payload,
        Payload::Integer(_)
            | Payload::Block {
                elem: ElemType::Integer,
                ..
            }
    );
    let value = |v: usize| meta.nodes.get(v).map(|n| &n.payload);
    let mut dim: Option<&Vec<i32>> = None;
    // R keeps one value per attribute name: a second one (a crafted meta)
    // would replace the value checked here when R sets them in turn.
    let mut seen = std::collections::HashSet::with_capacity(node.attrs.len());
    for (name, v) in &node.attrs {
        let bad = |what: &str| {
            format!(
                "attribute '{}' {what}",
                String::from_utf8_lossy(name)
                    .chars()
                    .take(40)
                    .collect::<String>()
            )
        };
        if !seen.insert(name.as_slice()) {
            return Err(bad("appears twice"));
        }
        match name.as_slice() {
            b"dim" => {
                let Some(Payload::Integer(d)) = value(*v) else {
                    return Err(bad("is not an integer vector"));
                };
                let mut prod: u128 = 1;
                for &x in d {
                    if x < 0 {
                        return Err(bad("has a negative or NA extent"));
                    }
                    prod = prod.saturating_mul(x as u128);
                }
                if d.is_empty() || !is_vector || prod != u128::from(len) {
                    return Err(bad(&format!("does not match the length {len}")));
                }
                dim = Some(d);
            }
            b"names"
                if !is_vector || !is_character(meta, *v) || node_len(meta, *v, built) != len =>
            {
                return Err(bad(&format!("is not {len} strings")));
            }
            b"class" => {
                let ok = match value(*v) {
                    Some(Payload::Character(cls)) => {
                        is_integer
                            || !cls
                                .iter()
                                .any(|c| matches!(c, Some((b, _)) if b == b"factor"))
                    }
                    _ => false,
                };
                if !ok {
                    return Err(bad(
                        "is not a valid class (or a factor that is not integer)",
                    ));
                }
            }
            b"comment" if !is_character(meta, *v) => {
                return Err(bad("is not character"));
            }
            b"row.names" => {
                let ok = matches!(
                    value(*v),
                    Some(
                        Payload::Integer(_)
                            | Payload::Double(_)
                            | Payload::Character(_)
                            | Payload::Block {
                                elem: ElemType::Integer | ElemType::Double | ElemType::String,
                                ..
                            }
                    )
                );
                if !ok || row_count(meta, *v, built).is_none() {
                    return Err(bad("is not valid row names"));
                }
            }
            _ => {}
        }
    }
    // Classes whose R methods fail with unclassed errors on bad parts: a
    // factor (integer, checked above) needs character levels, a date-time
    // a character time zone, if any.
    let has_class = |want: &[u8]| {
        node.attrs.iter().any(|(k, v)| {
            k == b"class"
                && matches!(value(*v), Some(Payload::Character(c))
                    if c.iter().any(|c| matches!(c, Some((b, _)) if b == want)))
        })
    };
    let attr_is_character = |want: &[u8]| {
        node.attrs
            .iter()
            .find(|(k, _)| k == want)
            .map(|&(_, v)| is_character(meta, v))
    };
    if has_class(b"factor") && attr_is_character(b"levels") != Some(true) {
        return Err("a factor without character levels".into());
    }
    if has_class(b"POSIXct") && attr_is_character(b"tzone") == Some(false) {
        return Err("a date-time whose time zone is not character".into());
    }
    if has_class(b"data.frame") && !matches!(node.payload, Payload::List(_)) {
        return Err("a data frame that is not a list".into());
    }
    // A data frame's columns have as many rows as its row names say (R
    // would print billions of rows, or fail unclassed).
    if has_class(b"data.frame") {
        if let Some(&(_, rn)) = node.attrs.iter().find(|(k, _)| k == b"row.names") {
            let rows = row_count(meta, rn, built).ok_or("attribute 'row.names' is not valid")?;
            for &c in &node.children {
                let Some(col) = meta.nodes.get(c) else {
                    continue;
                };
                // Nested data frames carry their own row names; a matrix
                // column has `rows` rows of several columns. A list with a
                // class (POSIXlt: a list of fields) has the length its
                // class's length() method says, which R, not this check,
                // knows.
                if col.attrs.iter().any(|(k, _)| k == b"row.names")
                    || (matches!(col.payload, Payload::List(_))
                        && col.attrs.iter().any(|(k, _)| k == b"class"))
                {
                    continue;
                }
                let col_rows = match col.attrs.iter().find(|(k, _)| k == b"dim") {
                    Some(&(_, d)) => match value(d) {
                        Some(Payload::Integer(d)) => d.first().map_or(0, |&r| r.max(0) as u64),
                        _ => 0,
                    },
                    None => node_len(meta, c, built),
                };
                if col_rows != rows {
                    return Err(format!(
                        "a data frame of {rows} rows has a column of {col_rows} rows"
                    ));
                }
            }
        }
    }
    // Checks that depend on dim (set first).
    for (name, v) in &node.attrs {
        let bad = |what: &str| format!("attribute '{}' {what}", String::from_utf8_lossy(name));
        match name.as_slice() {
            b"dimnames" => {
                let d = dim.ok_or_else(|| bad("without dim"))?;
                let elems = match meta.nodes.get(*v) {
                    Some(Node {
                        payload: Payload::List(_),
                        children,
                        ..
                    }) => children,
                    _ => return Err(bad("is not a list")),
                };
                if elems.len() != d.len() {
                    return Err(bad("does not match dim"));
                }
                for (&e, &extent) in elems.iter().zip(d) {
                    let n = node_len(meta, e, built);
                    let ok = matches!(value(e), Some(Payload::Null))
                        || (is_character(meta, e) && (n == 0 || n == extent as u64));
                    if !ok {
                        return Err(bad("does not match dim"));
                    }
                }
            }
            b"tsp" => {
                let Some(Payload::Double(t)) = value(*v) else {
                    return Err(bad("is not 3 numbers"));
                };
                let rows = dim.and_then(|d| d.first()).map_or(len, |&r| r as u64);
                let ok = is_vector
                    && t.len() == 3
                    && t.iter().all(|x| x.is_finite())
                    && t[2] > 0.0
                    && rows > 0
                    && rows <= i32::MAX as u64
                    && (t[1] - t[0] - (rows - 1) as f64 / t[2]).abs() <= 1e-5;
                if !ok {
                    return Err(bad("is not a valid time series period"));
                }
            }
            _ => {}
        }
    }
    let dim_first = node.attrs.iter().position(|(k, _)| k == b"dim");
    Ok(dim_first
        .into_iter()
        .chain((0..node.attrs.len()).filter(|&k| Some(k) != dim_first))
        .collect())
}

/// A factor's levels: inline strings, or the string block of this index.
pub enum Levels<'a> {
    Inline(&'a [Str]),
    Block(u32),
}

/// The levels of `node` if it is a factor (class "factor" and character
/// levels).
pub fn levels_of<'a>(meta: &'a Meta, node: &Node) -> Option<Levels<'a>> {
    let attr = |want: &[u8]| {
        node.attrs
            .iter()
            .find(|(k, _)| k == want)
            .and_then(|&(_, v)| meta.nodes.get(v))
            .map(|n| &n.payload)
    };
    let is_factor = matches!(attr(b"class"), Some(Payload::Character(c))
        if c.iter().any(|c| matches!(c, Some((b, _)) if b == b"factor")));
    if !is_factor {
        return None;
    }
    match attr(b"levels")? {
        Payload::Character(l) => Some(Levels::Inline(l)),
        Payload::Block {
            index,
            elem: ElemType::String,
        } => Some(Levels::Block(*index)),
        _ => None,
    }
}

impl Levels<'_> {
    /// How many levels there are (a string block of levels has
    /// `block_len(i)` strings).
    pub fn count(&self, block_len: &dyn Fn(u32) -> u64) -> u64 {
        match self {
            Levels::Inline(l) => l.len() as u64,
            Levels::Block(i) => block_len(*i),
        }
    }
}

/// Inline strings as pool elements (what [`duplicated_level`] reads).
pub fn elts(l: &[Str]) -> impl Iterator<Item = Elt<'_>> {
    l.iter()
        .map(|s| s.as_ref().map(|(b, e)| (b.as_slice(), *e)))
}

/// The first level that repeats an earlier one, if any: R's `factor()` and
/// `levels<-` refuse duplicated levels, and R warns about them whenever
/// such a factor is printed (`structure()` can still make one). Levels are
/// data like codes (a string block when long): the save and
/// `fmalloc_check()` look at them, a read does not. Latin-1 strings are
/// compared as their UTF-8 form, as R compares strings across encodings;
/// "bytes" strings only with "bytes" strings.
pub fn duplicated_level<'a>(levels: impl Iterator<Item = Elt<'a>>) -> Option<String> {
    let mut seen = HashMap::new();
    for (i, l) in levels.enumerate() {
        // A string marked "bytes" equals only one with the same bytes and
        // mark (R: "\u00e9" == a "bytes" copy of it is FALSE).
        let key = l.map(|(b, enc)| match enc {
            Encoding::Latin1 => (
                false,
                b.iter()
                    .map(|&c| char::from(c))
                    .collect::<String>()
                    .into_bytes(),
            ),
            Encoding::Bytes => (true, b.to_vec()),
            _ => (false, b.to_vec()),
        });
        if let Some(first) = seen.get(&key) {
            let shown = key.as_ref().map_or("NA".into(), |(_, b)| {
                let s: String = String::from_utf8_lossy(b).chars().take(60).collect();
                format!("\"{s}\"")
            });
            return Some(format!(
                "factor level {} ({shown}) repeats level {first}",
                i + 1
            ));
        }
        seen.insert(key, i + 1);
    }
    None
}

/// What is wrong with a factor's codes, if anything: each must be NA or a
/// level (1 to `levels`); R refuses to print or convert a factor with any
/// other code ("malformed factor"). The codes are data, not meta: the save
/// and `fmalloc_check()` look at them, a read does not.
pub fn bad_codes(codes: impl Iterator<Item = i32>, levels: u64) -> Option<String> {
    let mut bad = 0u64;
    let mut first = None;
    for (i, c) in codes.enumerate() {
        if c != i32::MIN && (c < 1 || c as u64 > levels) {
            bad += 1;
            first.get_or_insert((i as u64 + 1, c));
        }
    }
    first.map(|(at, c)| {
        format!(
            "{bad} factor code(s) are not a level (1 to {levels}), the first {c} at element {at}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_twice_is_found_across_encodings() {
        let l = |v: &[(&'static [u8], Encoding)]| {
            v.iter().map(|&(b, e)| Some((b, e))).collect::<Vec<_>>()
        };
        assert_eq!(
            duplicated_level(l(&[(b"a", Encoding::Utf8), (b"b", Encoding::Utf8)]).into_iter()),
            None
        );
        assert_eq!(
            duplicated_level(
                l(&[
                    (b"a", Encoding::Native),
                    (b"b", Encoding::Utf8),
                    (b"a", Encoding::Utf8)
                ])
                .into_iter()
            )
            .as_deref(),
            Some("factor level 3 (\"a\") repeats level 1")
        );
        // "é" in latin1 and in UTF-8 are one level.
        let found = duplicated_level(
            l(&[
                (b"caf\xc3\xa9", Encoding::Utf8),
                (b"caf\xe9", Encoding::Latin1),
            ])
            .into_iter(),
        );
        assert_eq!(
            found.as_deref(),
            Some("factor level 2 (\"café\") repeats level 1")
        );
        assert!(
            duplicated_level([None, Some((&b"x"[..], Encoding::Utf8)), None].into_iter()).is_some()
        );
        // A "bytes" string is another level than the same bytes in UTF-8.
        let found = duplicated_level(
            l(&[
                (b"caf\xc3\xa9", Encoding::Utf8),
                (b"caf\xc3\xa9", Encoding::Bytes),
            ])
            .into_iter(),
        );
        assert_eq!(found, None);
    }
}
