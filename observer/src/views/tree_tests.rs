//! The layout of a tree line: observer's marks first, the process's own command last.

use super::{
    pods::{self, PodTreeView},
    tests::{esc, pod_view, tree_view, PLAIN, SHOWN},
    tree,
};

/// A process's command is its line's last field, in the tree and in the pod tree: its text
/// ("  ZOMBIE for 1s, not reaped by…", "[exec by docker exec: …]") cannot stand where
/// observer's marks stand, nor pass for one.
#[test]
fn a_process_command_ends_its_line_after_every_mark() {
    let command = format!("arg1{SHOWN}");
    let tree = tree::render(&esc(tree_view()), PLAIN);
    let pod = pods::render(
        &esc(PodTreeView {
            pod: pod_view(None),
            containers: vec![tree_view()],
        }),
        PLAIN,
    );
    for out in [tree, pod] {
        let lines: Vec<&str> = out.lines().filter(|l| l.contains("nsppid")).collect();
        assert_eq!(lines.len(), 4, "{out}");
        for l in lines {
            assert!(l.ends_with(&command), "the command is not last: {l}");
            let marks = &l[..l.len() - command.len()];
            assert!(
                marks.contains("[exec by") && marks.contains("adopted from"),
                "{l}"
            );
        }
    }
}
