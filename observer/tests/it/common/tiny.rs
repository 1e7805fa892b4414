//! The smallest executable a storm can run: a static ELF of one page that exits 0 when given
//! any argument and otherwise waits for a signal (a process that lives until it is killed).
//!
//! The storms of exe_hash:: and export:: run tens of thousands of execs; with a dynamically
//! linked `/bin/true` or `sleep` each exec paid ~1 ms of CPU in the dynamic loader and libc's
//! start-up (~6× the whole fork, exec, exit and wait of this binary), so the tests spent most
//! of their time in a loader that observer never looks at. The kernel's exec path, its
//! tracepoints and everything observer records of the exec (path, argv, identity, hash) are
//! the same for this file as for any other.
//!
//! Written out here rather than built with a C compiler at test time: the tests also run in
//! the VM guests, which have none. It is 64 bytes of ELF header, 56 of program header and the
//! machine code of the host's architecture (its assembly beside the bytes).

use std::{os::unix::fs::PermissionsExt, path::Path};

/// Where the one segment is loaded; aligned for 64 KiB pages too.
const BASE: u64 = 0x40_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = 62; // EM_X86_64
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const CODE: &[u8] = &[
    0x48, 0x8b, 0x04, 0x24,       // mov rax, [rsp]      argc
    0x48, 0x83, 0xf8, 0x01,       // cmp rax, 1
    0x7f, 0x09,                   // jg exit             any argument: exit
    0xb8, 0x22, 0x00, 0x00, 0x00, // wait: mov eax, 34   pause()
    0x0f, 0x05,                   // syscall
    0xeb, 0xf7,                   // jmp wait
    0xb8, 0x3c, 0x00, 0x00, 0x00, // exit: mov eax, 60   exit(0)
    0x31, 0xff,                   // xor edi, edi
    0x0f, 0x05,                   // syscall
];

#[cfg(target_arch = "aarch64")]
const MACHINE: u16 = 183; // EM_AARCH64
#[cfg(target_arch = "aarch64")]
const CODE_WORDS: [u32; 14] = [
    0xf940_03e0, // ldr x0, [sp]        argc
    0xf100_041f, // cmp x0, #1
    0x5400_012c, // b.gt exit           any argument: exit
    0xd280_0000, // wait: mov x0, #0    ppoll(NULL, 0, NULL, NULL, 0): no pause() here
    0xd280_0001, // mov x1, #0
    0xd280_0002, // mov x2, #0
    0xd280_0003, // mov x3, #0
    0xd280_0004, // mov x4, #0
    0xd280_0928, // mov x8, #73
    0xd400_0001, // svc #0
    0x17ff_fff9, // b wait
    0xd280_0000, // exit: mov x0, #0    exit(0)
    0xd280_0ba8, // mov x8, #93
    0xd400_0001, // svc #0
];

fn code() -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    return CODE.to_vec();
    #[cfg(target_arch = "aarch64")]
    return CODE_WORDS.iter().flat_map(|w| w.to_le_bytes()).collect();
}

/// The ELF image: header, one read+execute `PT_LOAD` of the whole file, the code.
fn image() -> Vec<u8> {
    let code = code();
    let len = (EHDR + PHDR + code.len()) as u64;
    let mut f = Vec::with_capacity(len as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI, padding.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&MACHINE.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(BASE + (EHDR + PHDR) as u64).to_le_bytes()); // e_entry
    f.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [EHDR, PHDR, 1, 0, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        f.extend_from_slice(&(v as u16).to_le_bytes());
    }
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    for v in [0, BASE, BASE, len, len, 0x1_0000] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&code);
    f
}

/// Writes the binary to `to` (mode 755) with `tag` after its loaded bytes, so that each
/// tag gives a file of its own content (another hash, another identity).
pub fn write(to: &Path, tag: &str) {
    let mut bytes = image();
    bytes.extend_from_slice(tag.as_bytes());
    std::fs::write(to, bytes).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}
