//! `cargo xtask image`: the container image for both machines as one manifest list in
//! podman's local storage (`observer:<version>`, linux/amd64 and linux/arm64), built from
//! the packages' binaries (`FROM scratch`: no emulation is needed to build the arm64
//! image), then checked: the list names both platforms, and each platform's image holds
//! an observer for its machine (the ELF header's e_machine).

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{
    arch::Arch,
    package,
    util::{output, root, run},
};

const MACHINES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

pub fn image() -> Result<()> {
    for arch in MACHINES {
        package::package(arch)?;
    }
    let version = observer_version()?;
    let list = format!("localhost/observer:{version}");
    // A manifest list of that name from an earlier run would gain a second entry per
    // platform: start afresh (`manifest rm` removes the list, not the images).
    let _ = output(Command::new("podman").args(["manifest", "rm", &list]));
    if output(Command::new("podman").args(["image", "exists", &list])).is_some() {
        bail!("an image named {list} is in the way of the manifest list: `podman rmi {list}`");
    }
    run(Command::new("podman").args(["manifest", "create", &list]))?;
    for arch in MACHINES {
        let tag = format!("{list}-{arch}");
        run(Command::new("podman")
            .args(["build", "-q", "--platform", &format!("linux/{arch}")])
            .args(["-t", &tag, "-f"])
            .arg(root().join("Containerfile"))
            .arg(root().join("target/package")))?;
        run(Command::new("podman").args([
            "manifest",
            "add",
            &list,
            &format!("containers-storage:{tag}"),
        ]))?;
        check_image(&tag, arch)?;
    }
    check_list(&list)?;
    eprintln!("image: {list} (linux/amd64, linux/arm64)");
    Ok(())
}

/// observer's version (observer/Cargo.toml), the image's tag.
fn observer_version() -> Result<String> {
    let toml = std::fs::read_to_string(root().join("observer/Cargo.toml"))?;
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(String::from)
        .context("no version in observer/Cargo.toml")
}

/// The image's platform is `arch`'s and its /usr/bin/observer an ELF binary for it.
fn check_image(tag: &str, arch: Arch) -> Result<()> {
    let inspect = output(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        tag,
    ]))
    .with_context(|| format!("podman image inspect {tag}"))?;
    if inspect.trim() != format!("linux/{arch}") {
        bail!("{tag} is for {}, not linux/{arch}", inspect.trim());
    }
    let mount = output(Command::new("podman").args(["image", "mount", tag]))
        .with_context(|| format!("podman image mount {tag}"))?;
    let bin = std::path::Path::new(mount.trim()).join("usr/bin/observer");
    let checked = package::check_machine(&bin, arch);
    let _ = output(Command::new("podman").args(["image", "unmount", tag]));
    checked
}

/// The manifest list names exactly linux/amd64 and linux/arm64.
fn check_list(list: &str) -> Result<()> {
    let json = output(Command::new("podman").args(["manifest", "inspect", list]))
        .with_context(|| format!("podman manifest inspect {list}"))?;
    let v: serde_json::Value = serde_json::from_str(&json).context("the manifest list")?;
    let mut platforms: Vec<String> = v["manifests"]
        .as_array()
        .context("a manifest list without manifests")?
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    platforms.sort();
    if platforms != ["linux/amd64", "linux/arm64"] {
        bail!("{list} lists {platforms:?}, not linux/amd64 and linux/arm64");
    }
    Ok(())
}
