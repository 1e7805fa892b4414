//! The guest's root filesystem: busybox, a few util-linux tools and crun with their
//! libraries, the static observer binary, the static integration-test binary, the kernels'
//! modules for the run's disk and an /init that mounts the disk, runs each test of the VM's
//! modules on its own and prints one parseable line per test.

use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::util::{output, run};

/// Host tools copied with their shared libraries (busybox's applets differ in flags; crun
/// for the oci tests, which it cannot run on a hybrid-cgroup host; coreutils' id, true and
/// sleep and libcap's setcap for the credentials tests, which copy them: a copy of
/// busybox named otherwise is no applet).
const HOST_TOOLS: &[&str] = &[
    "/usr/bin/unshare",
    "/usr/bin/nsenter",
    "/usr/bin/setpriv",
    "/usr/bin/crun",
    "/usr/bin/id",
    "/usr/bin/true",
    "/usr/bin/sleep",
    "/usr/sbin/setcap",
];

/// Prefix of every line the runner parses.
pub const TAG: &str = "observer-vm:";

const INIT: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin OBSERVER_BIN=/bin/observer HOME=/root OBSERVER_VM=1
# pivot_root (the launcher's) refuses to work under the initramfs root: move to a tmpfs.
if [ ! -e /.switched ]; then
  mkdir -p /newroot && mount -t tmpfs -o size=80% tmpfs /newroot
  for f in /*; do [ "$f" = /newroot ] || cp -a "$f" /newroot/; done
  touch /newroot/.switched
  exec switch_root /newroot /init
fi
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# What udev (systemd-tmpfiles, initramfs-tools) links on every real system and devtmpfs
# lacks. Some kernels resolve execveat(fd, name) — glibc's fexecve, crun's re-exec of
# itself — through /dev/fd/<fd>/<name>: Debian's 5.10.0-32 (5.10.223) gives ENOENT
# without this link, 5.10.0-46 does not (docs/testing.md).
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir -p /sys/fs/cgroup /dev/pts && mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# The agent's HTTP listener is on 127.0.0.1 (tests read /v1/status and /metrics).
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# tracefs is left unmounted on purpose: observer mounts it when it is missing.
echo "observer-vm: kernel $(uname -r)"
# The run's disk (mod.rs: a virtio block device with an ext4 file system, the same in both
# boots of a kernel's run) on /disk, for the tests that keep files across a reboot
# (OBSERVER_VM_DISK). Its drivers are modules in Debian's kernels: loaded in the order the
# runner wrote (modules.rs).
m=/lib/modules/$(uname -r)
if [ -f "$m/load" ]; then
  while read -r k; do
    insmod "$m/$k.ko" || echo "observer-vm: note: insmod $k failed"
  done < "$m/load"
fi
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /disk
if mount -t ext4 /dev/vda /disk; then export OBSERVER_VM_DISK=/disk
else echo "observer-vm: note: no disk mounted on /disk"; fi
# Which boot of the guest this is (observer.boot=N; 1 unless the runner reboots it).
boot=$(sed -n 's/.*observer\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)
export OBSERVER_VM_BOOT=${boot:-1}
# `cargo xtask vm-test --only NAME` passes observer.only=NAME on the kernel command line.
only=$(sed -n 's/.*observer\.only=\([^ ]*\).*/\1/p' /proc/cmdline)
# One test binary; the tests of the modules in /tests/modules run, each in a process of its
# own (a test's name is `module::test`).
/tests/it --list --format terse 2>/dev/null | sed -n 's/: test$//p' > /tmp/list
while read -r m; do
  while read -r t; do
    case "$t" in "$m"::*) ;; *) continue ;; esac
    case "$t" in *"$only"*) ;; *) continue ;; esac
    echo "observer-vm: start $t"
    /tests/it --exact "$t" --test-threads=1 --nocapture > /tmp/out 2>&1 < /dev/null
    rc=$?
    if [ $rc -eq 0 ]; then
      why=$(sed -n 's/.*observer-test-skip: //p' /tmp/out | head -n 1)
      if [ -n "$why" ]; then echo "observer-vm: result $t skip $why"
      else echo "observer-vm: result $t pass"; fi
      # A test whose second half runs in the next boot says so (store.rs).
      if grep -q '^observer-test-reboot: ' /tmp/out; then echo "observer-vm: reboot $t"; fi
    else
      { grep -m 1 -A 6 'panicked at' /tmp/out; echo '[...]'; tail -n 60 /tmp/out; } | sed 's/^/  | /'
      echo "observer-vm: result $t fail"
    fi
  done < /tmp/list
done < /tests/modules
echo "observer-vm: done"
# As at a power cut: the disk is neither synced (-n) nor unmounted. What reaches it is what
# the programs wrote to it themselves (the history store's commits are fsync'd).
poweroff -n -f
"#;

/// Builds `out` (a gzip'd newc cpio) from the given binaries; the guest runs the tests of
/// `modules`. Its tools are the host's (`sysroot` None) or those of the unpacked packages
/// of another machine (guest.rs). `kernel_modules`: each kernel's `<release>/` directories
/// of modules for the disk (modules.rs), put in `/lib/modules/`.
pub fn build(
    work: &Path,
    observer: &Path,
    tests: &Path,
    modules: &[&str],
    sysroot: Option<&Path>,
    kernel_modules: &[&Path],
    out: &Path,
) -> Result<()> {
    let root = work.join("root");
    let _ = fs::remove_dir_all(&root);
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root",
        "tests", "var/lib",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    let busybox = Path::new("/bin/busybox");
    let guest_busybox = sysroot.map_or(busybox.to_path_buf(), |s| s.join("bin/busybox"));
    fs::copy(&guest_busybox, root.join("bin/busybox"))
        .with_context(|| format!("copying {} (busybox-static)", guest_busybox.display()))?;
    // The host's busybox, of the same Debian release, names the same applets.
    let applets = output(Command::new(busybox).arg("--list")).context("busybox --list")?;
    for a in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = symlink("busybox", root.join("bin").join(a));
    }
    for tool in HOST_TOOLS {
        match sysroot {
            None => copy_with_libs(Path::new(tool), &root)?,
            Some(s) => super::guest::copy_with_libs(s, tool, &root)?,
        }
    }
    copy_modules(kernel_modules, &root.join("lib/modules"))?;
    copy_without_debug_info(observer, &root.join("bin/observer"))?;
    copy_without_debug_info(tests, &root.join("tests/it"))?;
    fs::write(root.join("tests/modules"), modules.join("\n") + "\n")?;
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    let init = root.join("init");
    fs::write(&init, INIT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    run(Command::new("sh").current_dir(&root).arg("-c").arg(format!(
        "find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > '{}'",
        out.display()
    )))
}

/// Copies an ELF binary of either architecture without its debug information, with the
/// toolchain's own llvm-objcopy (`rust-objcopy`, shipped with rustc): the release profile's
/// `debug = 1` makes observer 106 MB and the test binary 114 MB, 19 and 7 MB without (the
/// gzip'd initramfs 63 MB, 16 MB without). Every
/// boot of every guest unpacks the initramfs under TCG, and the reboot test boots twice.
/// Without the tool the binary is copied as it is.
fn copy_without_debug_info(from: &Path, to: &Path) -> Result<()> {
    let tool = output(Command::new("rustc").args(["--print", "sysroot"]))
        .map(|s| {
            Path::new(s.trim())
                .join("lib/rustlib")
                .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
                .join("bin/rust-objcopy")
        })
        .filter(|t| t.exists());
    if let Some(tool) = tool {
        let stripped = Command::new(&tool)
            .arg("--strip-debug")
            .arg(from)
            .arg(to)
            .status()
            .is_ok_and(|s| s.success());
        if stripped {
            return Ok(());
        }
        eprintln!(
            "vm-test: note: {} could not strip {}",
            tool.display(),
            from.display()
        );
    }
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

/// Copies each kernel's `<release>/` directories of modules into `to`.
fn copy_modules(kernel_modules: &[&Path], to: &Path) -> Result<()> {
    for dir in kernel_modules {
        for release in fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            let release = release?;
            let into = to.join(release.file_name());
            fs::create_dir_all(&into)?;
            for f in fs::read_dir(release.path())? {
                let f = f?;
                fs::copy(f.path(), into.join(f.file_name()))?;
            }
        }
    }
    Ok(())
}

/// Copies an ELF binary and the shared libraries `ldd` lists to the same paths under `root`.
fn copy_with_libs(bin: &Path, root: &Path) -> Result<()> {
    let ldd =
        output(Command::new("ldd").arg(bin)).with_context(|| format!("ldd {}", bin.display()))?;
    let mut files = vec![bin.to_path_buf()];
    for l in ldd.lines() {
        let path = match l.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let dst = root.join(f.strip_prefix("/").unwrap_or(&f));
        fs::create_dir_all(dst.parent().unwrap())?;
        fs::copy(&f, &dst).with_context(|| format!("copying {}", f.display()))?;
    }
    Ok(())
}
