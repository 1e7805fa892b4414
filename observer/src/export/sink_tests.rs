//! Rotation by size and count, and failed writes, on a real directory.

use std::path::PathBuf;

use super::*;

/// A fresh directory under the system's temporary one.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("observer-sink-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` numbered lines of `width` bytes each (newline included).
fn lines(from: usize, n: usize, width: usize) -> Batch {
    let mut b = Batch::default();
    for i in from..from + n {
        let mut l = format!("{i:0w$}", w = width - 1).into_bytes();
        l.push(b'\n');
        b.push(&l);
    }
    b
}

/// The files of `dir`, and the lines of PATH.keep … PATH.1, PATH in that order (oldest
/// first).
fn read_all(dir: &Path, keep: u32) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut all = Vec::new();
    for n in (0..=keep).rev() {
        let name = if n == 0 {
            "out".into()
        } else {
            format!("out.{n}")
        };
        if let Ok(t) = std::fs::read_to_string(dir.join(name)) {
            assert!(
                t.is_empty() || t.ends_with('\n'),
                "a file ends with a whole line"
            );
            all.extend(t.lines().map(String::from));
        }
    }
    (names, all)
}

#[test]
fn rotation_keeps_keep_files_each_within_max_with_whole_lines_newest_in_path() {
    let d = dir("rotate");
    let mut f = RotatingFile::new(&d.join("out"), 100, 2);
    for k in 0..10 {
        // 10 batches of 5 lines of 30 bytes: 3 lines a file.
        f.write(&lines(k * 5, 5, 30)).unwrap();
    }
    let (names, all) = read_all(&d, 2);
    assert_eq!(names, ["out", "out.1", "out.2"]);
    for n in &names {
        let len = std::fs::metadata(d.join(n)).unwrap().len();
        assert!(len <= 100 && len.is_multiple_of(30), "{n}: {len} bytes");
    }
    // The newest lines, in order, none lost between the kept files.
    let want: Vec<String> = (50 - all.len()..50).map(|i| format!("{i:029}")).collect();
    assert_eq!(all, want);
    assert!(all.len() >= 7, "{} lines kept", all.len());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_line_longer_than_max_gets_a_file_of_its_own_and_keep_zero_keeps_only_path() {
    let d = dir("long");
    let mut f = RotatingFile::new(&d.join("out"), 10, 1);
    f.write(&lines(0, 1, 4)).unwrap();
    f.write(&lines(1, 1, 25)).unwrap();
    assert_eq!(std::fs::read_to_string(d.join("out")).unwrap().len(), 25);
    assert_eq!(std::fs::read_to_string(d.join("out.1")).unwrap(), "000\n");

    let mut f = RotatingFile::new(&d.join("zero"), 10, 0);
    for i in 0..5 {
        f.write(&lines(i, 1, 8)).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(d.join("zero")).unwrap(),
        "0000004\n"
    );
    assert!(!d.join("zero.1").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_existing_file_is_appended_to_and_rotated_when_full() {
    let d = dir("existing");
    std::fs::write(d.join("out"), "old\n").unwrap();
    let mut f = RotatingFile::new(&d.join("out"), 8, 3);
    f.write(&lines(0, 1, 4)).unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("out")).unwrap(),
        "old\n000\n"
    );
    f.write(&lines(1, 1, 4)).unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("out.1")).unwrap(),
        "old\n000\n"
    );
    assert_eq!(std::fs::read_to_string(d.join("out")).unwrap(), "001\n");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_failed_open_is_reported_once_then_waits_before_trying_again() {
    let d = dir("fail");
    let mut f = RotatingFile::new(&d.join("missing/out"), 100, 1);
    let e = f.write(&lines(0, 2, 4)).unwrap_err();
    assert_eq!((e.written, e.what), (0, "open"));
    assert_eq!(e.err.unwrap().kind(), io::ErrorKind::NotFound);
    let e = f.write(&lines(2, 2, 4)).unwrap_err();
    assert!(e.err.is_none(), "waiting to retry: {e:?}");
    // Once the directory exists and the wait is over, lines are written again.
    std::fs::create_dir(d.join("missing")).unwrap();
    f.retry_at = Some(Instant::now());
    f.write(&lines(4, 1, 4)).unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("missing/out")).unwrap(),
        "004\n"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn lines_fit_by_whole_lines() {
    let b = lines(0, 4, 10);
    assert_eq!(fitting(0, 35, &b, 0), 3);
    assert_eq!(fitting(30, 35, &b, 3), 3, "rotate first");
    assert_eq!(
        fitting(0, 5, &b, 1),
        2,
        "an over-long line alone in an empty file"
    );
    assert_eq!(fitting(0, 1000, &b, 0), 4);
}

#[test]
fn gzip_rotation_keeps_every_line_in_compressed_files_and_leaves_no_temporary() {
    use std::io::Read;
    let d = dir("gzip");
    let mut f = RotatingFile::new(&d.join("out"), 100, 3);
    f.gzip = true;
    for k in 0..4 {
        f.write(&lines(k * 5, 5, 30)).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["out", "out.1.gz", "out.2.gz", "out.3.gz"]);
    let mut all = String::new();
    for n in ["out.3.gz", "out.2.gz", "out.1.gz"] {
        let mut gz = flate2::read::GzDecoder::new(File::open(d.join(n)).unwrap());
        gz.read_to_string(&mut all).unwrap();
    }
    all.push_str(&std::fs::read_to_string(d.join("out")).unwrap());
    let got: Vec<&str> = all.lines().collect();
    let first = 20 - got.len();
    let want: Vec<String> = (first..20).map(|i| format!("{i:029}")).collect();
    assert_eq!(got, want, "the newest lines, in order, none lost");
    assert!(got.len() >= 11, "{} lines kept", got.len());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn files_are_not_world_readable_and_symlinks_at_their_paths_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("links");
    let victim = d.join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    // PATH itself a symlink: refused, the target untouched.
    std::os::unix::fs::symlink(&victim, d.join("out")).unwrap();
    let mut f = RotatingFile::new(&d.join("out"), 100, 2);
    assert!(
        f.write(&lines(0, 1, 30)).is_err(),
        "a symlinked PATH is refused"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    // The gzip temporary planted as a symlink: removed, not written through.
    std::fs::remove_file(d.join("out")).unwrap();
    std::os::unix::fs::symlink(&victim, d.join("out.1.gz.tmp")).unwrap();
    let mut f = RotatingFile::new(&d.join("out"), 100, 2);
    f.gzip = true;
    for k in 0..3 {
        f.write(&lines(k * 5, 5, 30)).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    for n in ["out", "out.1.gz"] {
        let mode = std::fs::metadata(d.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "{n}: mode {mode:o}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
