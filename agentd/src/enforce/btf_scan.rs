//! A minimal, single-pass reader of raw kernel BTF that answers one
//! question: the byte offset of `struct.field`. General BTF libraries build
//! a full type graph (about a second for a 6 MB vmlinux BTF in a debug
//! build, far longer under emulation); the offsets agentd needs take one
//! linear scan and a few lookups. It also counts a function's parameters,
//! for hooks whose signature changed between kernels.
use std::collections::HashMap;

/// Errors reading BTF.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfScanError {
    /// Not BTF, or truncated.
    #[error("malformed BTF: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// A type kind this reader does not know (newer kernel).
    #[error("unknown BTF kind {kind}")]
    UnknownKind {
        /// The kind number.
        kind: u32,
    },
    /// No struct of that name with members.
    #[error("no struct `{name}`")]
    NoStruct {
        /// The name asked for.
        name: String,
    },
    /// The struct has no such field (also searched in anonymous members).
    #[error("struct `{strukt}` has no field `{field}`")]
    NoField {
        /// Struct name.
        strukt: String,
        /// Field name.
        field: String,
    },
    /// No function of that name.
    #[error("no function `{name}`")]
    NoFunc {
        /// The name asked for.
        name: String,
    },
    /// The field is a bitfield or not byte-aligned.
    #[error("field `{strukt}.{field}` is not byte-aligned")]
    Unaligned {
        /// Struct name.
        strukt: String,
        /// Field name.
        field: String,
    },
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield: bool,
}

struct Type {
    kind: u32,
    name_off: u32,
    /// `type` for modifiers and typedefs.
    target: u32,
    members: Vec<Member>,
    /// Member or parameter count.
    vlen: u32,
}

/// Parsed BTF: types by id (from 1) and the string section.
pub struct BtfScan {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfScanError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfScanError::Malformed { what: "truncated" })
}

/// The type and string sections of raw BTF, bounds-checked.
fn sections(b: &[u8]) -> Result<(&[u8], &[u8]), BtfScanError> {
    if b.len() < 24 || b[0..2] != [0x9f, 0xeb] {
        return Err(BtfScanError::Malformed {
            what: "bad magic (big-endian BTF is not supported)",
        });
    }
    let hdr_len = u32_at(b, 4)? as usize;
    let type_off = u32_at(b, 8)? as usize;
    let type_len = u32_at(b, 12)? as usize;
    let str_off = u32_at(b, 16)? as usize;
    let str_len = u32_at(b, 20)? as usize;
    let types_at = hdr_len + type_off;
    let strs_at = hdr_len + str_off;
    let types = b
        .get(types_at..types_at + type_len)
        .ok_or(BtfScanError::Malformed {
            what: "type section out of bounds",
        })?;
    let strings = b
        .get(strs_at..strs_at + str_len)
        .ok_or(BtfScanError::Malformed {
            what: "string section out of bounds",
        })?;
    Ok((types, strings))
}

/// Every type record of the type section, after the implicit void (id 0).
fn parse_types(tb: &[u8]) -> Result<Vec<Type>, BtfScanError> {
    let mut types = vec![Type {
        kind: 0,
        name_off: 0,
        target: 0,
        members: vec![],
        vlen: 0,
    }];
    let mut at = 0;
    while at < tb.len() {
        let name_off = u32_at(tb, at)?;
        let info = u32_at(tb, at + 4)?;
        let target = u32_at(tb, at + 8)?;
        at += 12;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kflag = info >> 31 == 1;
        let mut members = Vec::new();
        let extra = match kind {
            0 | 2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
            1 | 14 | 17 => 4,
            3 => 12,
            KIND_STRUCT | KIND_UNION => {
                members = parse_members(tb, at, vlen, kflag)?;
                vlen * 12
            }
            6 | 13 => vlen * 8,
            15 | 19 => vlen * 12,
            kind => return Err(BtfScanError::UnknownKind { kind }),
        };
        at += extra;
        types.push(Type {
            kind,
            name_off,
            target,
            members,
            vlen: vlen as u32,
        });
    }
    Ok(types)
}

/// The `vlen` members of a struct or union starting at `at`; with
/// `kflag`, each offset packs the bitfield size in its top byte.
fn parse_members(
    tb: &[u8],
    at: usize,
    vlen: usize,
    kflag: bool,
) -> Result<Vec<Member>, BtfScanError> {
    (0..vlen)
        .map(|i| {
            let m = at + i * 12;
            let off = u32_at(tb, m + 8)?;
            let (bit_offset, bitfield) = if kflag {
                (off & 0x00ff_ffff, off >> 24 != 0)
            } else {
                (off, false)
            };
            Ok(Member {
                name_off: u32_at(tb, m)?,
                type_id: u32_at(tb, m + 4)?,
                bit_offset,
                bitfield,
            })
        })
        .collect()
}

impl BtfScan {
    /// Parses raw little-endian BTF (e.g. `/sys/kernel/btf/vmlinux`).
    pub fn parse(b: &[u8]) -> Result<Self, BtfScanError> {
        let (tb, strings) = sections(b)?;
        let types = parse_types(tb)?;
        let mut me = BtfScan {
            types,
            strings: strings.to_vec(),
            structs_by_name: HashMap::new(),
        };
        for (id, t) in me.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && !t.members.is_empty() {
                let name = me.str_at(t.name_off).to_string();
                me.structs_by_name.entry(name).or_default().push(id as u32);
            }
        }
        Ok(me)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.target
                }
                _ => break,
            }
        }
        id
    }

    fn find(&self, id: u32, field: &str, base: u32) -> Option<(u32, bool)> {
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            let name = self.str_at(m.name_off);
            if name == field {
                return Some((base + m.bit_offset, m.bitfield));
            }
            if name.is_empty() {
                let inner = self.resolve(m.type_id);
                if matches!(
                    self.types.get(inner as usize).map(|t| t.kind),
                    Some(KIND_STRUCT | KIND_UNION)
                ) {
                    if let Some(found) = self.find(inner, field, base + m.bit_offset) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    /// Number of parameters of the kernel function `name` (e.g. `bpf_lsm_inode_setattr`).
    pub fn func_param_count(&self, name: &str) -> Result<u32, BtfScanError> {
        self.types
            .iter()
            .find(|t| t.kind == KIND_FUNC && self.str_at(t.name_off) == name)
            .and_then(|f| self.types.get(f.target as usize))
            .filter(|p| p.kind == KIND_FUNC_PROTO)
            .map(|p| p.vlen)
            .ok_or_else(|| BtfScanError::NoFunc { name: name.into() })
    }

    /// Byte offset of `strukt.field` (looking through anonymous members).
    pub fn field_offset(&self, strukt: &str, field: &str) -> Result<u32, BtfScanError> {
        let ids = self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfScanError::NoStruct {
                name: strukt.into(),
            })?;
        let (bits, bitfield) = ids
            .iter()
            .find_map(|&id| self.find(id, field, 0))
            .ok_or_else(|| BtfScanError::NoField {
                strukt: strukt.into(),
                field: field.into(),
            })?;
        if bitfield || bits % 8 != 0 {
            return Err(BtfScanError::Unaligned {
                strukt: strukt.into(),
                field: field.into(),
            });
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF: struct outer { int a; union { long b; }; }.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0long\0".to_vec();
        let mut types = Vec::new();
        let mut push = |v: &[u32]| {
            v.iter()
                .for_each(|x| types.extend_from_slice(&x.to_le_bytes()))
        };
        // 1: int (kind 1) + 4 bytes
        push(&[1, 1 << 24, 4, 32]);
        // 2: long (kind 1)
        push(&[15, 1 << 24, 8, 64]);
        // 3: anonymous union { b: long @0 }
        push(&[0, (5 << 24) | 1, 8, 13, 2, 0]);
        // 4: struct outer { a: int @0; <anon>: union @64 }
        push(&[5, (4 << 24) | 2, 16, 11, 1, 0, 0, 3, 64]);
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = BtfScan::parse(&sample()).unwrap();
        assert_eq!(btf.field_offset("outer", "a"), Ok(0));
        assert_eq!(btf.field_offset("outer", "b"), Ok(8));
        assert!(matches!(
            btf.field_offset("outer", "zz"),
            Err(BtfScanError::NoField { .. })
        ));
        assert!(matches!(
            btf.field_offset("nope", "a"),
            Err(BtfScanError::NoStruct { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(BtfScan::parse(b"not btf at all, not at all").is_err());
    }

    /// The same lookup through btf-rs (an independent parser), for the
    /// cross-check: byte offset of `strukt.field`, through anonymous members.
    fn btf_rs_field_offset(btf: &btf_rs::Btf, strukt: &str, field: &str) -> Option<u32> {
        let s = btf
            .resolve_types_by_name(strukt)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                btf_rs::Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })?;
        let bits = btf_rs_member(btf, &s, field, 0)?;
        (bits % 8 == 0).then_some(bits / 8)
    }

    fn btf_rs_member(btf: &btf_rs::Btf, s: &btf_rs::Struct, field: &str, base: u32) -> Option<u32> {
        for m in &s.members {
            if m.bitfield_size().is_some_and(|size| size != 0) {
                continue;
            }
            let name = btf.resolve_name(m).unwrap_or_default();
            if name == field {
                return Some(base + m.bit_offset());
            }
            if name.is_empty() {
                if let Ok(btf_rs::Type::Struct(inner) | btf_rs::Type::Union(inner)) =
                    btf.resolve_chained_type(m)
                {
                    if let Some(off) = btf_rs_member(btf, &inner, field, base + m.bit_offset()) {
                        return Some(off);
                    }
                }
            }
        }
        None
    }

    #[test]
    fn agrees_with_btf_rs_on_this_kernel_or_skips() {
        let path = std::path::Path::new(super::super::btf_offsets::VMLINUX_BTF);
        let Ok(raw) = std::fs::read(path) else {
            eprintln!("SKIPPED: {} unreadable", path.display());
            return;
        };
        let fast = BtfScan::parse(&raw).expect("parse");
        let slow = btf_rs::Btf::from_file(path).expect("btf-rs");
        for (s, f) in [
            ("linux_binprm", "file"),
            ("file", "f_path"),
            ("dentry", "d_name"),
            ("mount", "mnt_parent"),
            ("task_struct", "tgid"),
            ("kernfs_node", "id"),
        ] {
            let want = btf_rs_field_offset(&slow, s, f).expect("btf-rs finds the field");
            assert_eq!(fast.field_offset(s, f).unwrap(), want, "{s}.{f}");
        }
        // `bpf_lsm_path_chmod(const struct path *, umode_t)` on every kernel since 5.7.
        assert_eq!(fast.func_param_count("bpf_lsm_path_chmod"), Ok(2));
    }
}
