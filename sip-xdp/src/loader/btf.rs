//! The object's BTF made loadable: the kernel needs it to accept the scan program, whose
//! `bpf_loop` callback must be described by BTF function info.
//!
//! Rust's debug info describes an enum that carries data as a BTF union whose members sit at
//! the variant's offset; the kernel wants every union member at offset 0 and refuses the whole
//! BTF ("Invalid member bits_offset"), after which aya loads the programs without any. Setting
//! those offsets to 0 changes nothing the kernel uses: our maps carry no BTF, and the programs'
//! function and line info name functions, not these types.
use std::borrow::Cow;

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_KIND_UNION: u32 = 5;

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// Where the `.BTF` section lies in a little-endian ELF64 object.
fn btf_section(elf: &[u8]) -> Option<(usize, usize)> {
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let section_headers = u64_at(elf, 0x28)? as usize;
    let entry_size = u16_at(elf, 0x3a)? as usize;
    let count = u16_at(elf, 0x3c)? as usize;
    let names_index = u16_at(elf, 0x3e)? as usize;
    let header = |i: usize| section_headers + i * entry_size;
    let names = u64_at(elf, header(names_index) + 0x18)? as usize;
    (0..count).find_map(|i| {
        let name = names + u32_at(elf, header(i))? as usize;
        let end = name + 5;
        (elf.get(name..end)? == b".BTF\0").then_some(())?;
        let offset = u64_at(elf, header(i) + 0x18)? as usize;
        let size = u64_at(elf, header(i) + 0x20)? as usize;
        Some((offset, size))
    })
}

/// Bytes after a type's 12-byte header, by kind (the kernel's Documentation/bpf/btf.rst).
fn extra_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // INT, VAR, DECL_TAG
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        2 | 7..=12 | 16 | 18 => 0,
        // ARRAY
        3 => 12,
        // STRUCT, UNION, DATASEC, ENUM64
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM, FUNC_PROTO
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

/// Zeroes the member offsets of every union in `btf`; how many it changed, `None` if it does
/// not parse.
fn zero_union_offsets(btf: &mut [u8]) -> Option<usize> {
    if u16_at(btf, 0)? != BTF_MAGIC {
        return None;
    }
    let header_len = u32_at(btf, 4)? as usize;
    let type_off = u32_at(btf, 8)? as usize;
    let type_len = u32_at(btf, 12)? as usize;
    let mut at = header_len + type_off;
    let end = at + type_len;
    let mut patched = 0;
    while at < end {
        let info = u32_at(btf, at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        at += 12;
        if kind == BTF_KIND_UNION {
            for member in 0..vlen {
                let offset_at = at + member * 12 + 8;
                if u32_at(btf, offset_at)? != 0 {
                    btf.get_mut(offset_at..offset_at + 4)?.fill(0);
                    patched += 1;
                }
            }
        }
        at += extra_bytes(kind, vlen)?;
    }
    Some(patched)
}

/// The object with its BTF made loadable, or as it is when there is nothing to mend (or it
/// does not parse: aya then loads it without BTF, as before, and only the scan program fails).
pub(super) fn loadable(object: &[u8]) -> Cow<'_, [u8]> {
    let Some((offset, size)) = btf_section(object) else {
        return Cow::Borrowed(object);
    };
    let mut mended = object.to_vec();
    let Some(btf) = mended.get_mut(offset..offset + size) else {
        return Cow::Borrowed(object);
    };
    match zero_union_offsets(btf) {
        Some(patched) if patched > 0 => Cow::Owned(mended),
        _ => Cow::Borrowed(object),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_objects_unions_are_mended() {
        if super::super::EBPF_OBJECT.is_empty() {
            return;
        }
        let (offset, size) = super::btf_section(super::super::EBPF_OBJECT).expect(".BTF");
        let mut btf = super::super::EBPF_OBJECT[offset..offset + size].to_vec();
        assert!(super::zero_union_offsets(&mut btf).expect("parses") > 0);
        assert_eq!(super::zero_union_offsets(&mut btf), Some(0));
    }
}
