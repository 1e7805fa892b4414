//! Finding (and if need be mounting) tracefs, and reading tracepoint record layouts from
//! `events/<category>/<name>/format`.
//!
//! The format file is a small kernel text format (`field:<decl>;\toffset:N;\tsize:N;...`)
//! for which no maintained crate exists; the parser below reads only the lines it needs.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::ProbeError;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Returns the tracefs root, mounting tracefs on /sys/kernel/tracing when no mount is found
/// (aya resolves tracepoint ids through it; minimal hosts and VMs often leave it unmounted).
pub(crate) fn ensure_mounted() -> Result<PathBuf, ProbeError> {
    if let Some(p) = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
    {
        return Ok(p.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    let c_target = std::ffi::CString::new(CANDIDATES[0]).expect("no NUL");
    // SAFETY: plain mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c_target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 || !target.join("events").is_dir() {
        return Err(ProbeError::NoTracefs(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    log::info!("mounted tracefs on {}", target.display());
    Ok(target.to_path_buf())
}

/// Whether the tracepoint `category/name` exists on this kernel.
pub(crate) fn exists(root: &Path, category: &str, name: &str) -> bool {
    root.join("events").join(category).join(name).is_dir()
}

/// Byte offset of `field` in the record of tracepoint `category/name`.
pub(crate) fn field_offset(root: &Path, category: &str, name: &str, field: &str) -> Option<u32> {
    let text =
        fs::read_to_string(root.join("events").join(category).join(name).join("format")).ok()?;
    parse_field_offset(&text, field)
}

/// The offset of `field` in a tracepoint `format` file's text.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        // The field name is the last word of the declaration, minus any array suffix.
        let name = decl.rsplit([' ', '*']).next()?.split('[').next()?;
        if name != field {
            return None;
        }
        line.split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    const SYS_EXIT: &str = "name: sys_exit_setns\nID: 342\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n\nprint fmt: \"0x%lx\", REC->ret\n";

    const FORK_61: &str = "format:\n\
\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";

    #[test]
    fn reads_syscall_ret_offset() {
        assert_eq!(parse_field_offset(SYS_EXIT, "ret"), Some(16));
        assert_eq!(parse_field_offset(SYS_EXIT, "__syscall_nr"), Some(8));
        assert_eq!(parse_field_offset(SYS_EXIT, "missing"), None);
    }

    #[test]
    fn reads_array_fields_and_other_kernel_layouts() {
        assert_eq!(parse_field_offset(FORK_61, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(FORK_61, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(FORK_61, "comm"), None);
    }
}
