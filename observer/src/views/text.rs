//! Small text helpers for the CLI views: durations, sizes, colours (only on a terminal).

#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.wrap("31", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.wrap("33", s)
    }
}

/// Text from a process (comm, argv, exe, container and pod names) made safe for a terminal:
/// on one line, every control character escaped (C0, DEL and C1, so neither an escape
/// sequence nor an 8-bit CSI reaches the operator's terminal), as `ps` does.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => o.push_str(&format!("\\x{:02x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// 42s, 3m12s, 2h05m, 3d04h.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// 512B, 1.2K, 3.4M, 1.0G.
pub fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", U[i])
    }
}

/// Lays out rows as left-aligned columns separated by two spaces (last column unpadded).
/// Every cell is escaped with [`one_line`]: tables show process-controlled text.
pub fn table(headers: &[&str], rows: &[Vec<String>], no_headers: bool) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| one_line(c)).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    if !no_headers {
        line(headers.to_vec());
    }
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_like_ps() {
        assert_eq!(duration(42.9), "42s");
        assert_eq!(duration(192.0), "3m12s");
        assert_eq!(duration(7500.0), "2h05m");
        assert_eq!(duration(273600.0), "3d04h");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(3 << 20), "3.0M");
        assert_eq!(one_line("sh -c\nsleep 1\x1b"), "sh -c\\nsleep 1\\x1b");
        assert_eq!(
            one_line("\x1b]0;PWNED\x07\x1b[2J"),
            "\\x1b]0;PWNED\\x07\\x1b[2J"
        );
        assert_eq!(one_line("a\u{9b}2Jb\x7f"), "a\\x9b2Jb\\x7f");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["PID", "COMMAND"],
            &[
                vec!["1".into(), "init".into()],
                vec!["12345".into(), "sleep 1".into()],
            ],
            false,
        );
        assert_eq!(t, "PID    COMMAND\n1      init\n12345  sleep 1\n");
        assert_eq!(table(&["A"], &[vec!["x".into()]], true), "x\n");
        assert_eq!(
            table(&["A"], &[vec!["\x1b[2Jx".into()]], true),
            "\\x1b[2Jx\n",
            "every cell is escaped"
        );
    }
}
