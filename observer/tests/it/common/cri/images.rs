//! The CRI tests' images, built locally (nothing can be pulled here) as `docker save`
//! archives that `ctr images import` takes: the sandbox image, a scratch image holding one
//! static `pause`, and busybox.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{BUSYBOX_IMAGE, PAUSE_IMAGE};
use crate::common::runtimes::{ok, rootfs_tar};

/// kubernetes' pause.c in a few lines: exits on SIGTERM and SIGINT, reaps what it adopts.
const PAUSE_C: &str = r"
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>
static void down(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
	struct sigaction a = {0};
	a.sa_handler = down;
	sigaction(SIGINT, &a, NULL);
	sigaction(SIGTERM, &a, NULL);
	a.sa_handler = reap;
	a.sa_flags = SA_NOCLDSTOP;
	sigaction(SIGCHLD, &a, NULL);
	for (;;) pause();
}
";

/// The sandbox image: `/pause` alone, static (musl-gcc, from musl-tools).
pub(super) fn pause_image(dir: &Path) -> PathBuf {
    let b = dir.join("build-pause");
    std::fs::create_dir_all(b.join("rootfs")).unwrap();
    std::fs::write(b.join("pause.c"), PAUSE_C).unwrap();
    ok(Command::new("musl-gcc")
        .args(["-static", "-Os", "-o"])
        .arg(b.join("rootfs/pause"))
        .arg(b.join("pause.c")));
    ok(Command::new("tar")
        .arg("-C")
        .arg(b.join("rootfs"))
        .arg("-cf")
        .arg(b.join("layer.tar"))
        .arg("."));
    docker_archive(&b, PAUSE_IMAGE, r#""Entrypoint":["/pause"]"#)
}

pub(super) fn busybox_image(dir: &Path) -> PathBuf {
    let b = dir.join("build-busybox");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(rootfs_tar(), b.join("layer.tar")).unwrap();
    docker_archive(&b, BUSYBOX_IMAGE, r#""Env":["PATH=/bin"]"#)
}

/// A `docker save` archive of the one-layer image `b/layer.tar` named `name`, with `config`
/// (JSON members of the image config's `config`), which `ctr images import` takes.
fn docker_archive(b: &Path, name: &str, config: &str) -> PathBuf {
    let sha = |p: &Path| {
        ok(Command::new("sha256sum").arg(p))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let img = b.join("image");
    std::fs::create_dir_all(&img).unwrap();
    std::fs::rename(b.join("layer.tar"), img.join("layer.tar")).unwrap();
    let diff = sha(&img.join("layer.tar"));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let cfg = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{{config}}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff}"]}}}}"#
    );
    std::fs::write(img.join("config.json"), cfg).unwrap();
    let c = sha(&img.join("config.json"));
    std::fs::rename(img.join("config.json"), img.join(format!("{c}.json"))).unwrap();
    std::fs::write(
        img.join("manifest.json"),
        format!(r#"[{{"Config":"{c}.json","RepoTags":["{name}"],"Layers":["layer.tar"]}}]"#),
    )
    .unwrap();
    let out = b.join("image.tar");
    ok(Command::new("tar")
        .arg("-C")
        .arg(&img)
        .arg("-cf")
        .arg(&out)
        .arg("."));
    out
}
