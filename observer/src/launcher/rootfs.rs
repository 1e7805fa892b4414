//! The default root file system: the host's static busybox and its applet links, built once
//! under /var/lib/observer/rootfs/busybox (no network needed).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use super::LauncherError;

pub(crate) const DEFAULT_ROOTFS: &str = "/var/lib/observer/rootfs/busybox";
const BUSYBOX: &str = "/bin/busybox";

/// Directories every rootfs needs as mount points.
pub(crate) const MOUNT_POINTS: [&str; 4] = ["proc", "sys", "dev", "tmp"];

pub(crate) fn ensure_default() -> Result<PathBuf, LauncherError> {
    let root = PathBuf::from(DEFAULT_ROOTFS);
    if root.join("bin/busybox").is_file() {
        return Ok(root);
    }
    let bb = Path::new(BUSYBOX);
    if !is_static_elf(bb) {
        return Err(LauncherError::NoBusybox);
    }
    let tmp = root.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    let io = |what: &str, e| LauncherError::Io(format!("building the default rootfs: {what}"), e);
    for d in ["bin", "etc", "root", "proc", "sys", "dev", "tmp", "var/tmp"] {
        fs::create_dir_all(tmp.join(d)).map_err(|e| io(d, e))?;
    }
    fs::copy(bb, tmp.join("bin/busybox")).map_err(|e| io("copying /bin/busybox", e))?;
    let list = Command::new(bb)
        .arg("--list")
        .output()
        .map_err(|e| io("busybox --list", e))?;
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        symlink("busybox", tmp.join("bin").join(applet)).map_err(|e| io(applet, e))?;
    }
    fs::write(
        tmp.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .map_err(|e| io("etc/passwd", e))?;
    fs::write(tmp.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .map_err(|e| io("etc/group", e))?;
    fs::create_dir_all(root.parent().expect("has parent")).map_err(|e| io("parent", e))?;
    fs::rename(&tmp, &root).map_err(|e| io("rename", e))?;
    Ok(root)
}

/// A static executable has no program interpreter (no `.interp`): it runs in any rootfs.
fn is_static_elf(p: &Path) -> bool {
    use object::Object;
    let Ok(data) = fs::read(p) else { return false };
    object::File::parse(&*data).is_ok_and(|f| f.section_by_name(".interp").is_none())
}

/// Checks a user-given rootfs: an existing directory that is not, itself or through a
/// symlink, the host's own root (a container there would see and change the host).
pub(crate) fn check(root: &Path) -> Result<PathBuf, LauncherError> {
    let md = fs::metadata(root).map_err(|_| LauncherError::RootfsMissing(root.to_path_buf()))?;
    if !md.is_dir() {
        return Err(LauncherError::RootfsNotDir(root.to_path_buf()));
    }
    let real = fs::canonicalize(root)
        .map_err(|e| LauncherError::Io(format!("resolving {}", root.display()), e))?;
    if real == Path::new("/") {
        return Err(LauncherError::RootfsIsHost(root.to_path_buf()));
    }
    Ok(real)
}

/// Finds `cmd` in the rootfs as PATH lookup inside the container would: Ok(path inside the
/// container) or the exit code docker uses (127 not found, 126 not executable).
pub(crate) fn resolve(root: &Path, cmd: &str, path_env: &str) -> Result<String, (i32, String)> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<String> = if cmd.contains('/') {
        vec![cmd.to_string()]
    } else {
        path_env
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{cmd}", d.trim_end_matches('/')))
            .collect()
    };
    let mut not_exec = None;
    for c in candidates {
        let host = inside(root, &c);
        match fs::metadata(&host) {
            Ok(md) if md.is_file() && md.permissions().mode() & 0o111 != 0 => return Ok(c),
            Ok(_) => not_exec = Some(c),
            Err(_) => {}
        }
    }
    match not_exec {
        Some(c) => Err((
            126,
            format!("`{c}` in the rootfs is not an executable file"),
        )),
        None => Err((
            127,
            format!("command `{cmd}` not found in the rootfs (PATH={path_env})"),
        )),
    }
}

/// The host path of `p` inside `root`, following symlinks within the rootfs (absolute links
/// are taken relative to the rootfs, as they resolve inside the container).
fn inside(root: &Path, p: &str) -> PathBuf {
    let mut cur = root.to_path_buf();
    let mut parts: Vec<String> = p
        .split('/')
        .filter(|s| !s.is_empty())
        .rev()
        .map(String::from)
        .collect();
    let mut hops = 0;
    while let Some(part) = parts.pop() {
        if part == ".." {
            if cur != root {
                cur.pop();
            }
            continue;
        }
        let next = cur.join(&part);
        match fs::read_link(&next) {
            Ok(target) if hops < 40 => {
                hops += 1;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    cur = root.to_path_buf();
                }
                for s in t.split('/').filter(|s| !s.is_empty() && *s != ".").rev() {
                    parts.push(s.to_string());
                }
            }
            _ => cur = next,
        }
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_inside_the_rootfs_with_docker_exit_codes() {
        let root =
            std::env::temp_dir().join(format!("observer-rootfs-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("bin/tool"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("bin/data"), "x").unwrap();
        symlink("/bin/tool", root.join("usr/bin/abs")).unwrap();
        assert_eq!(
            resolve(&root, "tool", "/usr/bin:/bin"),
            Ok("/bin/tool".into())
        );
        assert_eq!(
            resolve(&root, "abs", "/usr/bin:/bin"),
            Ok("/usr/bin/abs".into())
        );
        assert_eq!(resolve(&root, "data", "/bin").unwrap_err().0, 126);
        assert_eq!(resolve(&root, "nope", "/bin").unwrap_err().0, 127);
        assert_eq!(resolve(&root, "/bin/tool", "").unwrap(), "/bin/tool");
        fs::remove_dir_all(root).unwrap();
    }
}
