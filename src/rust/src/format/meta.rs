//! Object metadata ("meta") v2: how a named object is put together from its
//! blocks. Our own encoding, never a language runtime's serializer: the file
//! is untrusted, and decoding it must not run code, recurse, or allocate on
//! the strength of an unchecked count. Also specified in `inst/FORMAT.md`.
//!
//! All integers are fixed-width little-endian; doubles are IEEE 754 bit
//! patterns (so R's `NA_real_` payload survives).
//!
//! ```text
//! Meta blob (stored in its own block; the catalog entry holds its length and
//! its FNV-1a 64 checksum, verified when the heap is opened, so the blob has
//! no checksum of its own)
//! offset  size  field
//!      0     4  META_MAGIC b"RFMN"
//!      4     4  meta version (u32) = 2   (1 = R serialize(), refused)
//!      8     4  summary length s (u32)
//!     12     s  summary
//!   12+s     …  body: the root node; must end exactly at the end of the blob
//!
//! Summary (what fmalloc_ls() shows; strings are UTF-8)
//!     +0     2  type length t (u16), then t bytes: typeof() ("list" for a data frame)
//!      …     4  class length c (u32), then c bytes: class() joined by "/"
//!      …     8  length (f64, a whole number in [0, 2^52]; rows for a data frame)
//!      …     1  has dim (0 or 1); if 1: dim length d (u32), then d bytes ("3x4")
//!
//! Node (NODE_MIN = 6 bytes, then the kind's payload, then the attributes,
//! then -- lists only -- the elements; i.e. a pre-order stream)
//!     +0     1  kind (KIND_*)
//!     +1     1  flags: bit 0 = the S4 bit; other bits 0
//!     +2     4  attribute count a (u32); 0 for NULL
//!     +6     …  payload:
//!               NULL, S4OBJ    nothing
//!               LIST           u64 number of elements n
//!               BLOCK          u32 index into the entry's blocks, u8 element
//!                              type (as in the catalog); each block is
//!                              referenced by exactly one BLOCK node
//!               LGL, INT       u64 n, then n x i32 (NA = i32::MIN)
//!               DBL            u64 n, then n x f64
//!               CPLX           u64 n, then n x (f64 re, f64 im)
//!               RAW            u64 n, then n bytes
//!               STR            u64 n, then n strings: u8 encoding
//!                              (0 native, 1 UTF-8, 2 latin1, 3 bytes,
//!                              255 NA); unless NA: u32 length, bytes (no NUL)
//!      …     …  a attributes: u32 name length (1..=MAX_ATTR_NAME), name bytes
//!               (no NUL), then the value: a node
//!      …     …  LIST only: n element nodes
//! ```
//!
//! Limits checked before anything is allocated: every count is at most the
//! remaining bytes divided by the smallest encoding of one item, and lists
//! and attributes nest at most [`MAX_DEPTH`] deep. Decoding keeps an explicit
//! stack (no recursion) and never panics on any input.

use super::ElemType;
pub use crate::strpool::Encoding;

/// Magic at offset 0 (the same as meta v1's, so v1 is recognised and refused
/// by its version).
pub const META_MAGIC: [u8; 4] = *b"RFMN";
/// The version this code reads and writes.
pub const META_VERSION: u32 = 2;
/// The version written with R's `serialize()` (never decoded).
pub const META_VERSION_SERIALIZE: u32 = 1;
/// Deepest nesting of lists and attribute values.
pub const MAX_DEPTH: usize = 1000;
/// Largest summary length: R's longest vector (`R_XLEN_T_MAX`, 2^52).
/// A summary length is a whole number in [0, 2^52], or the summary is
/// damaged (every larger double would list in e-notation, or not exactly).
pub const MAX_SUMMARY_LENGTH: f64 = 4_503_599_627_370_496.0;
/// Longest attribute name in bytes (R's limit for symbol names).
pub const MAX_ATTR_NAME: usize = 10_000;

const OFF_VERSION: usize = 4;
const OFF_SUMMARY_LEN: usize = 8;
/// Bytes before the summary.
pub const HEADER_LEN: usize = 12;
/// Smallest encoded node: kind, flags, attribute count.
const NODE_MIN: usize = 6;
/// Smallest encoded attribute: name length, a 1-byte name, a node.
const ATTR_MIN: usize = 4 + 1 + NODE_MIN;

pub const KIND_NULL: u8 = 0;
pub const KIND_LIST: u8 = 1;
pub const KIND_BLOCK: u8 = 2;
pub const KIND_LGL: u8 = 3;
pub const KIND_INT: u8 = 4;
pub const KIND_DBL: u8 = 5;
pub const KIND_CPLX: u8 = 6;
pub const KIND_RAW: u8 = 7;
pub const KIND_STR: u8 = 8;
pub const KIND_S4OBJ: u8 = 9;

const FLAG_S4: u8 = 1;
const STR_NA: u8 = 0xFF;

/// One string of a character vector: bytes and encoding, `None` for NA.
pub type Str = Option<(Vec<u8>, Encoding)>;

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Null,
    /// A list (VECSXP) of this many elements (the node's `children`).
    List(u64),
    /// An atomic vector whose data are block `index` of the entry.
    Block {
        index: u32,
        elem: ElemType,
    },
    Logical(Vec<i32>),
    Integer(Vec<i32>),
    Double(Vec<f64>),
    Complex(Vec<[f64; 2]>),
    Raw(Vec<u8>),
    Character(Vec<Str>),
    /// An S4 object without a data part (its slots are attributes).
    S4Object,
}

impl Payload {
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Null => KIND_NULL,
            Payload::List(_) => KIND_LIST,
            Payload::Block { .. } => KIND_BLOCK,
            Payload::Logical(_) => KIND_LGL,
            Payload::Integer(_) => KIND_INT,
            Payload::Double(_) => KIND_DBL,
            Payload::Complex(_) => KIND_CPLX,
            Payload::Raw(_) => KIND_RAW,
            Payload::Character(_) => KIND_STR,
            Payload::S4Object => KIND_S4OBJ,
        }
    }
}

/// One decoded node. Attribute values and list elements are indices into
/// [`Meta::nodes`], always larger than the node's own index (pre-order).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub payload: Payload,
    pub s4: bool,
    /// (name, value node) in stored order.
    pub attrs: Vec<(Vec<u8>, usize)>,
    /// List elements (empty unless `payload` is a list).
    pub children: Vec<usize>,
}

/// What `fmalloc_ls()` shows of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub type_name: String,
    pub class: String,
    pub length: f64,
    pub dim: Option<String>,
}

/// A [`Summary`] borrowing its text from the bytes it was decoded from
/// (listing many objects decodes each summary without allocating).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryRef<'a> {
    pub type_name: &'a str,
    pub class: &'a str,
    pub length: f64,
    pub dim: Option<&'a str>,
}

impl SummaryRef<'_> {
    pub fn to_owned(&self) -> Summary {
        Summary {
            type_name: self.type_name.to_owned(),
            class: self.class.to_owned(),
            length: self.length,
            dim: self.dim.map(str::to_owned),
        }
    }
}

/// A decoded meta: the summary and the nodes, root first.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub summary: Summary,
    pub nodes: Vec<Node>,
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Writes a meta blob as a stream: the summary, then each node in pre-order
/// (for an attribute value, [`Writer::attr_name`] first). The writer does not
/// check the structure; [`decode`] does, and callers decode what they wrote
/// before storing it.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A blob with the header and the summary.
    pub fn new(summary: &Summary) -> Result<Writer, String> {
        let mut s = Vec::new();
        let t = summary.type_name.as_bytes();
        let t_len = u16::try_from(t.len()).map_err(|_| "summary type too long".to_string())?;
        s.extend_from_slice(&t_len.to_le_bytes());
        s.extend_from_slice(t);
        put_bytes32(&mut s, summary.class.as_bytes())?;
        s.extend_from_slice(&summary.length.to_le_bytes());
        match &summary.dim {
            None => s.push(0),
            Some(d) => {
                s.push(1);
                put_bytes32(&mut s, d.as_bytes())?;
            }
        }
        let s_len = u32::try_from(s.len()).map_err(|_| "summary too long".to_string())?;
        let mut buf = Vec::with_capacity(HEADER_LEN + s.len() + 64);
        buf.extend_from_slice(&META_MAGIC);
        buf.extend_from_slice(&META_VERSION.to_le_bytes());
        buf.extend_from_slice(&s_len.to_le_bytes());
        buf.extend_from_slice(&s);
        Ok(Writer { buf })
    }

    /// The name of the attribute whose value is the next node.
    pub fn attr_name(&mut self, name: &[u8]) -> Result<(), String> {
        put_bytes32(&mut self.buf, name)
    }

    /// One node: header and payload (its attributes and elements follow).
    pub fn node(&mut self, payload: &Payload, s4: bool, n_attrs: u32) -> Result<(), String> {
        let b = &mut self.buf;
        b.push(payload.kind());
        b.push(if s4 { FLAG_S4 } else { 0 });
        b.extend_from_slice(&n_attrs.to_le_bytes());
        let n = |len: usize| (len as u64).to_le_bytes();
        match payload {
            Payload::Null | Payload::S4Object => {}
            Payload::List(len) => b.extend_from_slice(&len.to_le_bytes()),
            Payload::Block { index, elem } => {
                b.extend_from_slice(&index.to_le_bytes());
                b.push(*elem as u8);
            }
            Payload::Logical(v) | Payload::Integer(v) => {
                b.extend_from_slice(&n(v.len()));
                v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
            }
            Payload::Double(v) => {
                b.extend_from_slice(&n(v.len()));
                v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
            }
            Payload::Complex(v) => {
                b.extend_from_slice(&n(v.len()));
                for [re, im] in v {
                    b.extend_from_slice(&re.to_le_bytes());
                    b.extend_from_slice(&im.to_le_bytes());
                }
            }
            Payload::Raw(v) => {
                b.extend_from_slice(&n(v.len()));
                b.extend_from_slice(v);
            }
            Payload::Character(v) => {
                b.extend_from_slice(&n(v.len()));
                for s in v {
                    match s {
                        None => b.push(STR_NA),
                        Some((bytes, enc)) => {
                            b.push(*enc as u8);
                            put_bytes32(b, bytes)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn put_bytes32(b: &mut Vec<u8>, bytes: &[u8]) -> Result<(), String> {
    let len = u32::try_from(bytes.len()).map_err(|_| "string too long".to_string())?;
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(bytes);
    Ok(())
}

/// Encodes `meta` (nodes in any order that makes node 0 the root and every
/// reference point to a later node; each node reached once).
pub fn encode(meta: &Meta) -> Result<Vec<u8>, String> {
    let mut w = Writer::new(&meta.summary)?;
    // Work items, last on top: (attribute name, node).
    let mut todo: Vec<(Option<&[u8]>, usize)> = vec![(None, 0)];
    while let Some((name, id)) = todo.pop() {
        let node = meta
            .nodes
            .get(id)
            .ok_or_else(|| format!("node {id} does not exist"))?;
        if let Some(name) = name {
            w.attr_name(name)?;
        }
        let n_attrs = u32::try_from(node.attrs.len()).map_err(|_| "too many attributes")?;
        w.node(&node.payload, node.s4, n_attrs)?;
        // Pushed in reverse: attributes first, then elements, in order.
        for &c in node.children.iter().rev() {
            todo.push((None, c));
        }
        for (k, v) in node.attrs.iter().rev() {
            todo.push((Some(k.as_slice()), *v));
        }
    }
    Ok(w.finish())
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("meta truncated at byte {} (needs {n} more)", self.pos))?;
        let out = self.b.get(self.pos..end).ok_or("meta truncated")?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A count of items each at least `min_size` bytes long, checked
    /// against the bytes left.
    fn count(&mut self, n: u64, min_size: usize, what: &str) -> Result<usize, String> {
        let limit = self.remaining() / min_size.max(1);
        match usize::try_from(n) {
            Ok(n) if n <= limit => Ok(n),
            _ => Err(format!(
                "{what} count {n} exceeds what the remaining {} bytes can hold",
                self.remaining()
            )),
        }
    }

    fn utf8(&mut self, len: usize, what: &str) -> Result<&'a str, String> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"))
    }
}

/// The meta version of `meta` after checking its magic.
pub fn version(meta: &[u8]) -> Result<u32, String> {
    if meta.len() < HEADER_LEN || meta.get(..4) != Some(&META_MAGIC[..]) {
        return Err("bad meta header".into());
    }
    let mut r = Reader {
        b: meta,
        pos: OFF_VERSION,
    };
    r.u32()
}

/// Checks magic and version; returns a reader at the summary and its length.
fn header(meta: &[u8]) -> Result<(Reader<'_>, usize), String> {
    match version(meta)? {
        META_VERSION => {}
        META_VERSION_SERIALIZE => {
            return Err(
                "meta format version 1 (R serialize(), written by an older Rfmalloc) is not \
                 read by this Rfmalloc for safety; save the object again with a version that \
                 reads it and this one"
                    .into(),
            )
        }
        v => return Err(format!("meta format version {v} is not supported")),
    }
    let mut r = Reader {
        b: meta,
        pos: OFF_SUMMARY_LEN,
    };
    let s_len = r.u32()? as usize;
    if s_len > r.remaining() {
        return Err("bad summary length".into());
    }
    Ok((r, s_len))
}

fn summary(r: &mut Reader<'_>, s_len: usize) -> Result<Summary, String> {
    summary_ref(r, s_len).map(|s| s.to_owned())
}

fn summary_ref<'a>(r: &mut Reader<'a>, s_len: usize) -> Result<SummaryRef<'a>, String> {
    let start = r.pos;
    let t = r.u16()? as usize;
    let type_name = r.utf8(t, "summary type")?;
    let c = r.u32()? as usize;
    let class = r.utf8(c, "summary class")?;
    let length = r.f64()?;
    if !(length.is_finite() && length >= 0.0) {
        return Err("bad summary length field".into());
    }
    if length.fract() != 0.0 || length > MAX_SUMMARY_LENGTH {
        // Rust prints 1e300 with all its digits: such lengths in e-notation.
        let shown = if length < 1e16 {
            format!("{length}")
        } else {
            format!("{length:e}")
        };
        return Err(format!(
            "summary length {shown} is not a whole number in [0, 2^52]"
        ));
    }
    let dim = match r.u8()? {
        0 => None,
        1 => {
            let d = r.u32()? as usize;
            Some(r.utf8(d, "summary dim")?)
        }
        _ => return Err("bad summary dim flag".into()),
    };
    if r.pos - start != s_len {
        return Err("summary length does not match its fields".into());
    }
    // R strings never hold a NUL (the writer's texts come from R), and R
    // cannot make a string of one: such a summary is damaged.
    if [Some(type_name), Some(class), dim]
        .iter()
        .flatten()
        .any(|t| t.contains('\0'))
    {
        return Err("summary text holds a NUL byte".into());
    }
    Ok(SummaryRef {
        type_name,
        class,
        length,
        dim,
    })
}

/// The summary alone (what `fmalloc_ls()` needs); the body is not read.
pub fn decode_summary(meta: &[u8]) -> Result<Summary, String> {
    let (mut r, s_len) = header(meta)?;
    summary(&mut r, s_len)
}

/// The summary section of a meta blob (the bytes `fmalloc_ls()` needs),
/// if the meta has a valid header and its summary decodes; the catalog
/// keeps a copy of it in the entry (catalog v2).
pub fn summary_section(meta: &[u8]) -> Option<&[u8]> {
    let (mut r, s_len) = header(meta).ok()?;
    let start = r.pos;
    summary(&mut r, s_len).ok()?;
    meta.get(start..start + s_len)
}

/// Decodes a summary section on its own (as kept in a catalog entry).
pub fn decode_summary_section(b: &[u8]) -> Result<Summary, String> {
    decode_summary_ref(b).map(|s| s.to_owned())
}

/// [`decode_summary_section`] without allocating.
pub fn decode_summary_ref(b: &[u8]) -> Result<SummaryRef<'_>, String> {
    let mut r = Reader { b, pos: 0 };
    summary_ref(&mut r, b.len())
}

/// One node's header and payload (not its attributes or elements).
/// Returns the node and its attribute and element counts.
fn read_node(r: &mut Reader<'_>) -> Result<(Node, usize, usize), String> {
    let at = r.pos;
    let kind = r.u8()?;
    let flags = r.u8()?;
    if flags & !FLAG_S4 != 0 {
        return Err(format!("bad node flags at byte {at}"));
    }
    let n_attrs_raw = r.u32()?;
    let mut n_children = 0usize;
    let payload = match kind {
        KIND_NULL => {
            if flags != 0 || n_attrs_raw != 0 {
                return Err(format!("NULL with attributes at byte {at}"));
            }
            Payload::Null
        }
        KIND_S4OBJ => Payload::S4Object,
        KIND_LIST => {
            let n = r.u64()?;
            n_children = r.count(n, NODE_MIN, "list element")?;
            Payload::List(n_children as u64)
        }
        KIND_BLOCK => {
            let index = r.u32()?;
            let elem = ElemType::from_u8(r.u8()?)
                .filter(|e| *e != ElemType::Bytes)
                .ok_or_else(|| format!("bad element type at byte {at}"))?;
            Payload::Block { index, elem }
        }
        KIND_LGL | KIND_INT => {
            let n = r.u64()?;
            let n = r.count(n, 4, "element")?;
            let v: Vec<i32> = r
                .take(n * 4)?
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if kind == KIND_LGL {
                if v.iter().any(|&x| x != 0 && x != 1 && x != i32::MIN) {
                    return Err(format!("bad logical value at byte {at}"));
                }
                Payload::Logical(v)
            } else {
                Payload::Integer(v)
            }
        }
        KIND_DBL => {
            let n = r.u64()?;
            let n = r.count(n, 8, "element")?;
            Payload::Double(r.take(n * 8)?.chunks_exact(8).map(f64_of).collect())
        }
        KIND_CPLX => {
            let n = r.u64()?;
            let n = r.count(n, 16, "element")?;
            let v = r
                .take(n * 16)?
                .chunks_exact(16)
                .map(|c| [f64_of(&c[..8]), f64_of(&c[8..])])
                .collect();
            Payload::Complex(v)
        }
        KIND_RAW => {
            let n = r.u64()?;
            let n = r.count(n, 1, "element")?;
            Payload::Raw(r.take(n)?.to_vec())
        }
        KIND_STR => {
            let n = r.u64()?;
            let n = r.count(n, 1, "string")?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let enc = match r.u8()? {
                    STR_NA => {
                        v.push(None);
                        continue;
                    }
                    0 => Encoding::Native,
                    1 => Encoding::Utf8,
                    2 => Encoding::Latin1,
                    3 => Encoding::Bytes,
                    e => return Err(format!("bad string encoding {e} at byte {}", r.pos - 1)),
                };
                let len = r.u32()? as usize;
                if len > i32::MAX as usize {
                    return Err("string too long".into());
                }
                let bytes = r.take(len)?;
                if bytes.contains(&0) {
                    return Err(format!("string with a NUL byte near byte {}", r.pos));
                }
                v.push(Some((bytes.to_vec(), enc)));
            }
            Payload::Character(v)
        }
        k => return Err(format!("bad node kind {k} at byte {at}")),
    };
    let n_attrs = r.count(u64::from(n_attrs_raw), ATTR_MIN, "attribute")?;
    let node = Node {
        payload,
        s4: flags & FLAG_S4 != 0,
        attrs: Vec::with_capacity(n_attrs),
        children: Vec::with_capacity(n_children),
    };
    Ok((node, n_attrs, n_children))
}

fn f64_of(c: &[u8]) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    f64::from_le_bytes(a)
}

/// One open node on the decoding stack.
struct Frame {
    node: usize,
    attrs_left: usize,
    children_left: usize,
}

/// Reads one node, appends it to `nodes` and, if it has attributes or
/// elements to come, opens a frame for it (at most [`MAX_DEPTH`]).
fn push(
    r: &mut Reader<'_>,
    nodes: &mut Vec<Node>,
    stack: &mut Vec<Frame>,
) -> Result<usize, String> {
    let (node, attrs_left, children_left) = read_node(r)?;
    let id = nodes.len();
    nodes.push(node);
    if attrs_left > 0 || children_left > 0 {
        if stack.len() >= MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        stack.push(Frame {
            node: id,
            attrs_left,
            children_left,
        });
    }
    Ok(id)
}

/// Decodes and validates a whole meta blob. `n_blocks` is the number of
/// blocks of the catalog entry: every block must be referenced by exactly
/// one BLOCK node.
pub fn decode(meta: &[u8], n_blocks: usize) -> Result<Meta, String> {
    let (mut r, s_len) = header(meta)?;
    let summary = summary(&mut r, s_len)?;
    let mut nodes: Vec<Node> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    push(&mut r, &mut nodes, &mut stack)?;
    while let Some(top) = stack.last_mut() {
        let parent = top.node;
        if top.attrs_left > 0 {
            top.attrs_left -= 1;
            let len = r.u32()? as usize;
            if len == 0 || len > MAX_ATTR_NAME {
                return Err(format!("bad attribute name length {len}"));
            }
            let name = r.take(len)?;
            if name.contains(&0) {
                return Err("attribute name with a NUL byte".into());
            }
            let name = name.to_vec();
            let id = push(&mut r, &mut nodes, &mut stack)?;
            if let Some(p) = nodes.get_mut(parent) {
                p.attrs.push((name, id));
            }
        } else if top.children_left > 0 {
            top.children_left -= 1;
            let id = push(&mut r, &mut nodes, &mut stack)?;
            if let Some(p) = nodes.get_mut(parent) {
                p.children.push(id);
            }
        } else {
            stack.pop();
        }
    }
    if r.remaining() != 0 {
        return Err(format!("{} stray bytes after the structure", r.remaining()));
    }
    // Every block exactly once.
    let mut seen = vec![false; n_blocks];
    for n in &nodes {
        if let Payload::Block { index, .. } = n.payload {
            match seen.get_mut(index as usize) {
                Some(s) if !*s => *s = true,
                Some(_) => return Err(format!("block {} is used twice", index as u64 + 1)),
                None => {
                    return Err(format!(
                        "reference to block {} of {n_blocks}",
                        index as u64 + 1
                    ))
                }
            }
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(format!("block {} of {n_blocks} is not used", i + 1));
    }
    Ok(Meta { summary, nodes })
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
