//! Member offsets of kernel structs from the running kernel's BTF (/sys/kernel/btf/vmlinux),
//! turned into the `Offsets` table the kernel programs read through.
//!
//! BTF parsing is btf-rs's (LGPL-2.1-or-later, compatible with this project's GPL-2.0-or-later);
//! this module only walks struct members: anonymous struct/union members are searched
//! recursively (task_struct and mm_struct wrap members in them), dotted paths step into
//! embedded structs (`ns.inum`), and bitfields are refused (a byte offset cannot reach them)
//! except through `bit_offset`, for the one flag read by bit (linux_binprm.secureexec).

use std::{
    cell::RefCell,
    collections::HashMap,
    path::{Path, PathBuf},
};

use btf_rs::{Backend, Btf, Type};
use observer_common::{Offsets, ABSENT};

use super::ProbeError;

pub(crate) const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

/// How the BTF file was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opened {
    /// Mapped: types are parsed as they are looked up.
    Mapped,
    /// Read into a memfd, which is mapped (the file itself refused mmap).
    MappedCopy,
    /// Parsed whole (neither could be mapped).
    Parsed,
}

/// `path`'s BTF read into a memfd and mapped from there: for a file that cannot be mapped
/// itself (sysfs's vmlinux before ~6.16), so that only the types looked up are parsed.
fn mapped_copy(path: &Path) -> std::io::Result<Btf> {
    use std::{io::Write, os::fd::FromRawFd};
    let bytes = std::fs::read(path)?;
    // SAFETY: a C string literal; the descriptor returned is checked and owned below.
    let fd = unsafe { libc::memfd_create(c"observer-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by nothing else.
    let mut copy = unsafe { std::fs::File::from_raw_fd(fd) };
    copy.write_all(&bytes)?;
    drop(bytes);
    // btf-rs maps a path only: the memfd's, open while it maps it (the map keeps it after).
    let via = format!("/proc/self/fd/{fd}");
    Btf::from_file_with_backend(&via, Backend::Mmap).map_err(std::io::Error::other)
}

pub(crate) struct KernelBtf {
    btf: Btf,
    path: PathBuf,
    /// How it was opened (the log says, `-vv`).
    how: Opened,
    /// The structs looked up so far, by name: a lookup by name walks every type of vmlinux
    /// (~130,000; btf-rs keeps no name index with the mmap backend), and the offsets take
    /// ~50 lookups of a dozen structs — a third of the agent's start-up before, and seconds
    /// of it in an emulated guest.
    structs: RefCell<HashMap<String, Option<btf_rs::Struct>>>,
}

impl KernelBtf {
    pub(crate) fn open(path: &Path) -> Result<Self, ProbeError> {
        if !path.exists() {
            return Err(ProbeError::NoBtf(path.to_path_buf()));
        }
        // Mmap: only the ~50 types looked up below are parsed, not the whole of vmlinux
        // (faster start, and none of the memory a full parse keeps). Kernels before ~6.16
        // cannot mmap /sys/kernel/btf/vmlinux (ENODEV): there the file is copied into a
        // memfd, which maps. Parsing it whole took 1.2–1.6 s of each agent's start in the
        // emulated 5.10 and 6.1 guests (~0.3 s mapped; docs/testing.md).
        let (btf, how) = match Btf::from_file_with_backend(path, Backend::Mmap) {
            Ok(btf) => (btf, Opened::Mapped),
            Err(_) => match mapped_copy(path) {
                Ok(btf) => (btf, Opened::MappedCopy),
                Err(e) => {
                    log::debug!("{}: no mapped copy ({e}); parsing it whole", path.display());
                    let btf = Btf::from_file_with_backend(path, Backend::Cache).map_err(|e| {
                        ProbeError::Btf {
                            path: path.to_path_buf(),
                            reason: e.to_string(),
                        }
                    })?;
                    (btf, Opened::Parsed)
                }
            },
        };
        let kbtf = KernelBtf {
            btf,
            path: path.to_path_buf(),
            how,
            structs: RefCell::default(),
        };
        log::debug!("{}: {:?}", kbtf.path.display(), kbtf.how);
        Ok(kbtf)
    }

    fn err(&self, reason: String) -> ProbeError {
        ProbeError::Btf {
            path: self.path.clone(),
            reason,
        }
    }

    /// The struct definition named `name` (forward declarations skipped).
    fn find_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        if let Some(s) = self.structs.borrow().get(name) {
            return s.clone();
        }
        let found = self.btf.resolve_types_by_name(name).ok().and_then(|types| {
            types.into_iter().find_map(|t| match t {
                Type::Struct(s) => Some(s),
                _ => None,
            })
        });
        self.structs
            .borrow_mut()
            .insert(name.to_string(), found.clone());
        found
    }

    /// Strips typedef/const/volatile/restrict/type-tag layers.
    fn strip(&self, mut t: Type) -> Result<Type, ProbeError> {
        for _ in 0..16 {
            match &t {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let inner = t.as_btf_type().expect("qualifier has a btf type");
                    t = self
                        .btf
                        .resolve_chained_type(inner)
                        .map_err(|e| self.err(e.to_string()))?;
                }
                _ => return Ok(t),
            }
        }
        Err(self.err("type qualifier chain too long".into()))
    }

    /// Byte offset and type of member `name` in `s`, searching anonymous members too.
    fn member(&self, s: &btf_rs::Struct, name: &str) -> Result<Option<(u32, Type)>, ProbeError> {
        for m in &s.members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            let bit = m.bit_offset();
            if mname == name {
                if m.bitfield_size().unwrap_or(0) != 0 || bit % 8 != 0 {
                    return Err(self.err(format!("member {name} is a bitfield")));
                }
                let t = self
                    .btf
                    .resolve_chained_type(m)
                    .map_err(|e| self.err(e.to_string()))?;
                return Ok(Some((bit / 8, t)));
            }
            if mname.is_empty() {
                let t = self
                    .btf
                    .resolve_chained_type(m)
                    .map_err(|e| self.err(e.to_string()))?;
                if let Type::Struct(inner) | Type::Union(inner) = self.strip(t)? {
                    if let Some((off, t)) = self.member(&inner, name)? {
                        return Ok(Some((bit / 8 + off, t)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Offset of a dotted member path (`ns.inum`) inside struct `st`; None if any hop is
    /// missing in this kernel.
    pub(crate) fn offset(&self, st: &str, path: &str) -> Result<Option<u32>, ProbeError> {
        let Some(mut s) = self.find_struct(st) else {
            return Ok(None);
        };
        let mut total = 0u32;
        let mut hops = path.split('.').peekable();
        while let Some(hop) = hops.next() {
            let Some((off, t)) = self.member(&s, hop)? else {
                return Ok(None);
            };
            total += off;
            if hops.peek().is_some() {
                match self.strip(t)? {
                    Type::Struct(inner) | Type::Union(inner) => s = inner,
                    other => {
                        return Err(self.err(format!(
                            "{st}.{path}: {hop} is a {}, not an embedded struct",
                            other.name()
                        )))
                    }
                }
            }
        }
        Ok(Some(total))
    }

    /// Bit offset of bitfield (or plain) member `name` directly in struct `st` (no
    /// anonymous members searched: linux_binprm's flags are direct members); None if this
    /// kernel has no such member.
    pub(crate) fn bit_offset(&self, st: &str, name: &str) -> Option<u32> {
        let s = self.find_struct(st)?;
        s.members
            .iter()
            .find(|m| self.btf.resolve_name(*m).unwrap_or_default() == name)
            .map(|m| m.bit_offset())
    }

    /// Offset of `path` in struct `st`, or ABSENT where this kernel lacks it.
    fn optional(&self, st: &str, path: &str) -> Result<u32, ProbeError> {
        self.first_of(st, &[path])
    }

    /// The first of `paths` this kernel's struct `st` has (ABSENT if none).
    fn first_of(&self, st: &str, paths: &[&str]) -> Result<u32, ProbeError> {
        for p in paths {
            if let Some(o) = self.offset(st, p)? {
                return Ok(o);
            }
        }
        Ok(ABSENT)
    }

    pub(crate) fn size_of(&self, st: &str) -> Option<u32> {
        self.find_struct(st).map(|s| s.size() as u32)
    }

    /// Resolves every offset the programs use. Members every supported kernel (≥ 5.8) has
    /// are required; the rest (time namespaces, < 5.6) may be absent.
    pub(crate) fn offsets(&self) -> Result<Offsets, ProbeError> {
        let mut o = Offsets::ALL_ABSENT;
        let req = |st: &str, path: &str| -> Result<u32, ProbeError> {
            self.offset(st, path)?
                .ok_or_else(|| ProbeError::MissingMember(format!("{st}.{path}")))
        };
        o.task_pid = req("task_struct", "pid")?;
        o.task_tgid = req("task_struct", "tgid")?;
        o.task_real_parent = req("task_struct", "real_parent")?;
        o.task_start_boottime = match self.offset("task_struct", "start_boottime")? {
            Some(v) => v,
            None => req("task_struct", "real_start_time")?,
        };
        o.task_comm = req("task_struct", "comm")?;
        o.task_real_cred = req("task_struct", "real_cred")?;
        o.task_thread_pid = req("task_struct", "thread_pid")?;
        o.task_nsproxy = req("task_struct", "nsproxy")?;
        o.task_cgroups = req("task_struct", "cgroups")?;
        o.task_exit_code = req("task_struct", "exit_code")?;
        o.task_signal = req("task_struct", "signal")?;
        o.task_mm = req("task_struct", "mm")?;
        o.task_state = match self.offset("task_struct", "__state")? {
            Some(v) => v,
            None => req("task_struct", "state")?,
        };
        o.task_exit_state = req("task_struct", "exit_state")?;
        o.task_flags = req("task_struct", "flags")?;
        o.signal_live = req("signal_struct", "live")?;
        o.signal_nr_threads = req("signal_struct", "nr_threads")?;
        o.cred_uid = req("cred", "uid")?;
        o.cred_gid = req("cred", "gid")?;
        o.cred_user_ns = req("cred", "user_ns")?;
        o.pid_level = req("pid", "level")?;
        o.pid_numbers = req("pid", "numbers")?;
        o.upid_size = self
            .size_of("upid")
            .ok_or_else(|| ProbeError::MissingMember("struct upid".into()))?;
        o.upid_nr = req("upid", "nr")?;
        o.upid_ns = req("upid", "ns")?;
        o.pidns_inum = req("pid_namespace", "ns.inum")?;
        o.utsns_inum = req("uts_namespace", "ns.inum")?;
        o.ipcns_inum = req("ipc_namespace", "ns.inum")?;
        o.mntns_inum = req("mnt_namespace", "ns.inum")?;
        o.netns_inum = req("net", "ns.inum")?;
        o.userns_inum = req("user_namespace", "ns.inum")?;
        o.cgroupns_inum = req("cgroup_namespace", "ns.inum")?;
        o.timens_inum = self.optional("time_namespace", "ns.inum")?;
        o.nsproxy_size = self
            .size_of("nsproxy")
            .ok_or_else(|| ProbeError::MissingMember("struct nsproxy".into()))?;
        o.nsproxy_uts = req("nsproxy", "uts_ns")?;
        o.nsproxy_ipc = req("nsproxy", "ipc_ns")?;
        o.nsproxy_mnt = req("nsproxy", "mnt_ns")?;
        o.nsproxy_pid_for_children = req("nsproxy", "pid_ns_for_children")?;
        o.nsproxy_net = req("nsproxy", "net_ns")?;
        o.nsproxy_time = self.optional("nsproxy", "time_ns")?;
        o.nsproxy_cgroup = req("nsproxy", "cgroup_ns")?;
        o.css_set_dfl_cgrp = req("css_set", "dfl_cgrp")?;
        o.cgroup_kn = req("cgroup", "kn")?;
        o.cgroup_level = req("cgroup", "level")?;
        o.cgroup_root = req("cgroup", "root")?;
        o.cgroup_root_hierarchy_id = req("cgroup_root", "hierarchy_id")?;
        o.kernfs_node_id = req("kernfs_node", "id")?;
        o.mm_arg_start = req("mm_struct", "arg_start")?;
        o.mm_arg_end = req("mm_struct", "arg_end")?;
        o.binprm_filename = req("linux_binprm", "filename")?;
        self.exec_offsets(&mut o)?;
        self.memcg_offsets(&mut o)?;
        Ok(o)
    }

    /// The value of enumerator `name` of enum `en`; None if this kernel has neither.
    pub(crate) fn enum_value(&self, en: &str, name: &str) -> Option<u32> {
        let types = self.btf.resolve_types_by_name(en).ok()?;
        types.into_iter().find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| self.btf.resolve_name(*m).unwrap_or_default() == name)
                .map(btf_rs::EnumMember::val),
            _ => None,
        })
    }

    /// What the OOM program reads of the allocating task's memory cgroup: its limit and
    /// usage at the kill. Optional: a kernel without a memory controller leaves the
    /// event's memcg fields unset (the agent then reads the cgroup's files).
    fn memcg_offsets(&self, o: &mut Offsets) -> Result<(), ProbeError> {
        let subsys = self.optional("css_set", "subsys")?;
        o.css_set_memory_css = match self.enum_value("cgroup_subsys_id", "memory_cgrp_id") {
            Some(id) if subsys != ABSENT => subsys + id * 8,
            _ => ABSENT,
        };
        o.css_parent = self.optional("cgroup_subsys_state", "parent")?;
        o.memcg_css = self.optional("mem_cgroup", "css")?;
        o.memcg_usage = self.optional("mem_cgroup", "memory.usage")?;
        o.memcg_max = self.optional("mem_cgroup", "memory.max")?;
        o.page_size = crate::host::scan::page_size() as u32;
        Ok(())
    }

    /// What the exec program reads beyond the task: the credentials after the exec, the
    /// kernel's privilege verdict and the executable's identity. Optional: a kernel without
    /// one of them leaves that field 0 in the events.
    fn exec_offsets(&self, o: &mut Offsets) -> Result<(), ProbeError> {
        o.task_cred = self.optional("task_struct", "cred")?;
        o.cred_suid = self.optional("cred", "suid")?;
        o.cred_sgid = self.optional("cred", "sgid")?;
        o.cred_euid = self.optional("cred", "euid")?;
        o.cred_egid = self.optional("cred", "egid")?;
        o.cred_cap_effective = self.optional("cred", "cap_effective")?;
        o.binprm_file = self.optional("linux_binprm", "file")?;
        o.binprm_secureexec_bit = self
            .bit_offset("linux_binprm", "secureexec")
            .unwrap_or(ABSENT);
        o.file_inode = self.optional("file", "f_inode")?;
        o.inode_ino = self.optional("inode", "i_ino")?;
        o.inode_size = self.optional("inode", "i_size")?;
        o.inode_sb = self.optional("inode", "i_sb")?;
        o.inode_mtime_sec = self.first_of(
            "inode",
            &["i_mtime_sec", "__i_mtime.tv_sec", "i_mtime.tv_sec"],
        )?;
        o.inode_mtime_nsec = self.first_of(
            "inode",
            &["i_mtime_nsec", "__i_mtime.tv_nsec", "i_mtime.tv_nsec"],
        )?;
        o.sb_dev = self.optional("super_block", "s_dev")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, os::fd::AsRawFd};

    use super::*;

    /// The running kernel's BTF, or None (with a note) where it has none.
    fn kernel_btf() -> Option<Vec<u8>> {
        match std::fs::read(DEFAULT_BTF) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("skipped: no {DEFAULT_BTF} ({e})");
                None
            }
        }
    }

    #[test]
    fn a_btf_file_that_cannot_be_mapped_is_mapped_from_a_copy_with_the_same_offsets() {
        let Some(bytes) = kernel_btf() else { return };
        let file = std::env::temp_dir().join(format!("observer-btf-{}", std::process::id()));
        std::fs::write(&file, &bytes).unwrap();
        let mapped = KernelBtf::open(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(mapped.how, Opened::Mapped);
        // A pipe cannot be mapped (as sysfs's vmlinux before ~6.16).
        let (rx, mut tx) = std::io::pipe().unwrap();
        let writer = std::thread::spawn(move || tx.write_all(&bytes));
        let piped =
            KernelBtf::open(Path::new(&format!("/proc/self/fd/{}", rx.as_raw_fd()))).unwrap();
        writer.join().unwrap().unwrap();
        assert_eq!(piped.how, Opened::MappedCopy);
        assert_eq!(piped.offsets().unwrap(), mapped.offsets().unwrap());
    }

    #[test]
    fn a_file_that_is_no_btf_is_a_clear_error() {
        let file = std::env::temp_dir().join(format!("observer-nobtf-{}", std::process::id()));
        std::fs::write(&file, b"not BTF at all").unwrap();
        let e = KernelBtf::open(&file).err().expect("refused");
        std::fs::remove_file(&file).unwrap();
        assert!(e.to_string().starts_with("reading BTF from "), "{e}");
    }
}
