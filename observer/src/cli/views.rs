//! `observer tree | ps | containers | pods | zombies | history | why`: ask the agent over
//! its socket; without an agent, build the same views from a one-shot /proc scan and say so
//! on stderr.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::{de::DeserializeOwned, Serialize};

use crate::views::endings::{self, HistoryFilter, HistoryView};
use crate::{
    api::{
        assemble::ViewCtx,
        client::{self, ClientError},
        service::{self, ApiError, Source},
        DEFAULT_SOCKET,
    },
    containers::names::{Resolver, StateDirs},
    host::{cgroupfs::CgroupFs, clock::boot_now_ns, scan},
    table::{
        snapshot::{Scope, Snapshot},
        Table,
    },
    views::{
        lists,
        model::{ContainerView, ProcessView, TreeView, ZombieView},
        pods::{self, PodTreeView, PodView},
        status::{self, Health},
        text::{self, Escaped, Style},
        tree,
        why::{self, WhyView},
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Args, Clone)]
pub(crate) struct ViewOpts {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Format,
    /// Leave out the header line of tables.
    #[arg(long)]
    no_headers: bool,
    /// The agent's socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

pub(crate) enum View {
    Tree(String),
    /// A pod's tree (what `Tree` becomes when its reference names a pod).
    PodTree(String),
    Pods,
    /// A container's processes or all; `-l`'s credentials.
    Ps(Option<String>, bool),
    Containers,
    Zombies,
    History(String, HistoryFilter),
    /// A reference, and the boot to answer from.
    Why(String, Option<i32>),
    /// The agent's account of itself (`observer status`); only an agent can answer.
    Status,
}

/// A table built from one /proc scan, for when no agent runs.
struct Local(Table);

impl Source for Local {
    fn snapshot(&self, scope: Scope) -> Option<Snapshot> {
        Some(self.0.snapshot(scope))
    }
    fn member_of(&self, pid: u32) -> Option<u32> {
        self.0.get(pid).and_then(|p| p.container)
    }
}

fn api_path(v: &View) -> String {
    let enc = client::urlencode;
    match v {
        View::Tree(c) => format!("/v1/containers/{}/tree", enc(c)),
        View::PodTree(p) => format!("/v1/pods/{}/tree", enc(p)),
        View::Pods => "/v1/pods".into(),
        View::Ps(Some(c), _) => format!("/v1/processes?container={}", enc(c)),
        View::Ps(None, _) => "/v1/processes".into(),
        View::Containers => "/v1/containers".into(),
        View::Zombies => "/v1/zombies".into(),
        View::History(c, f) => {
            let mut q = Vec::new();
            if let Some(s) = f.since_s {
                q.push(format!("since={}ms", (s * 1000.0) as u64));
            }
            if f.failed {
                q.push("failed=true".into());
            }
            if let Some(c) = &f.comm {
                q.push(format!("comm={}", enc(c)));
            }
            if let Some(b) = f.boot {
                q.push(format!("boot={b}"));
            }
            if f.exec {
                q.push("exec=true".into());
            }
            let q = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            format!("/v1/containers/{}/history{q}", enc(c))
        }
        View::Why(t, None) => format!("/v1/why/{}", enc(t)),
        View::Why(t, Some(b)) => format!("/v1/why/{}?boot={b}", enc(t)),
        View::Status => "/v1/status".into(),
    }
}

enum Answer {
    /// A JSON document (the API's own bytes when it came from the agent).
    Json(Vec<u8>),
    /// The view as text, rendered by the agent (trees: `?format=text`).
    Text(String),
    Error(ApiError),
}

/// A table of every process /proc shows now (their command lines, executables and the
/// exec sessions they are in too): what the one-shot views and `observer events` start from.
pub(super) fn scanned_table(cgroupfs: &CgroupFs) -> Table {
    let host_pidns = scan::ns_inode(std::process::id(), "pid");
    let mut table = Table::new(host_pidns, cgroupfs.clone());
    table.seed(&scan::scan_all(true, false), boot_now_ns());
    let missing = table.missing_details();
    table.fill_details(scan::parallel(&missing, |&(pid, start, ns)| {
        Some(scan::Details::read(
            pid,
            start,
            false,
            ns,
            cgroupfs.v2.as_deref(),
        ))
    }));
    table
}

fn local(view: &View) -> anyhow::Result<Answer> {
    if matches!(view, View::Status) {
        anyhow::bail!("no agent answers on the socket: `observer status` describes a running agent (start one with `observer agent`)");
    }
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("observer: no agent running; this is a one-shot /proc scan (zombie ages, exit codes and adoptions need `observer agent`)");
    }
    let cgroupfs = CgroupFs::discover();
    let src = Local(scanned_table(&cgroupfs));
    let resolver = std::sync::Mutex::new(Resolver::new(StateDirs::default()));
    let mut ctx = ViewCtx {
        now_ns: boot_now_ns(),
        resolver: &resolver,
        cgroupfs: &cgroupfs,
        cgroup_files: None,
        stat_files: None,
        store: None,
    };
    fn to<T: Serialize>(r: Result<T, ApiError>) -> anyhow::Result<Answer> {
        Ok(match r {
            Ok(v) => Answer::Json(serde_json::to_vec(&v)?),
            Err(e) => Answer::Error(e),
        })
    }
    match view {
        View::Tree(c) => to(service::tree(&src, &mut ctx, c)),
        View::PodTree(p) => to(service::pod_tree(&src, &mut ctx, p)),
        View::Pods => to(service::pods(&src, &mut ctx)),
        View::Ps(c, _) => to(service::processes(&src, &mut ctx, c.as_deref())),
        View::Containers => to(service::containers(&src, &mut ctx)),
        View::Zombies => to(service::zombies(&src, &mut ctx)),
        View::History(c, f) => to(service::history(&src, &mut ctx, c, f)),
        View::Why(t, b) => to(service::why(&src, &mut ctx, t, *b)),
        View::Status => unreachable!("answered above: only an agent has a status"),
    }
}

fn remote(opts: &ViewOpts, view: &View) -> anyhow::Result<Option<Answer>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut path = api_path(view);
    // Trees are rendered by the agent for text output: decoding their JSON here cost more
    // than the agent's whole answer (a 1,000-process tree is 600 kB of it).
    if opts.output != Format::Json && matches!(view, View::Tree(_) | View::PodTree(_)) {
        let color = std::io::stdout().is_terminal();
        path.push_str(&format!("?format=text&color={color}"));
    }
    match rt.block_on(client::get(&opts.socket, &path)) {
        Ok((status, body, text)) => {
            if status.is_success() && text {
                Ok(Some(Answer::Text(
                    String::from_utf8_lossy(&body).into_owned(),
                )))
            } else if status.is_success() {
                Ok(Some(Answer::Json(body.to_vec())))
            } else {
                let e: ApiError = serde_json::from_slice(&body).with_context(|| {
                    format!(
                        "agent answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    )
                })?;
                Ok(Some(Answer::Error(e)))
            }
        }
        Err(ClientError::NoAgent { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The view's JSON decoded for text output: every string in it escaped.
fn typed<T: Serialize + DeserializeOwned>(v: &[u8]) -> anyhow::Result<Escaped<T>> {
    Escaped::from_json(v).context("decoding the agent's answer (agent and CLI versions differ?)")
}

pub(crate) fn run(opts: ViewOpts, view: View) -> anyhow::Result<ExitCode> {
    let ask = |view: &View| -> anyhow::Result<Answer> {
        Ok(match remote(&opts, view)? {
            Some(a) => a,
            None => local(view)?,
        })
    };
    let mut view = view;
    let mut answer = ask(&view)?;
    // `tree <pod>`: the agent (or the local view) says the reference is a pod.
    if let (Answer::Error(ApiError::IsPod { .. }), View::Tree(q)) = (&answer, &view) {
        view = View::PodTree(q.clone());
        answer = ask(&view)?;
    }
    let v = match answer {
        Answer::Json(v) => v,
        Answer::Text(t) => {
            crate::stdout::print(&text::rendered(&t, std::io::stdout().is_terminal()))?;
            return Ok(ExitCode::SUCCESS);
        }
        Answer::Error(e) => {
            eprintln!("observer: {}", Escaped::new(e)?.explain());
            return Ok(ExitCode::FAILURE);
        }
    };
    if opts.output == Format::Json {
        let mut v = v;
        v.push(b'\n');
        crate::stdout::write(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let style = Style {
        color: std::io::stdout().is_terminal(),
    };
    let text = match view {
        View::Tree(_) => tree::render(&typed::<TreeView>(&v)?, style),
        View::PodTree(_) => pods::render(&typed::<PodTreeView>(&v)?, style),
        View::Pods => pods::render_pods(&typed::<Vec<PodView>>(&v)?, opts.no_headers),
        View::Ps(_, long) => {
            lists::render_ps(&typed::<Vec<ProcessView>>(&v)?, opts.no_headers, long)
        }
        View::Containers => {
            lists::render_containers(&typed::<Vec<ContainerView>>(&v)?, opts.no_headers)
        }
        View::Zombies => lists::render_zombies(&typed::<Vec<ZombieView>>(&v)?, opts.no_headers),
        View::History(..) => endings::render(&typed::<HistoryView>(&v)?),
        View::Why(..) => why::render(&typed::<WhyView>(&v)?),
        View::Status => status::render(&typed::<Health>(&v)?),
    };
    crate::stdout::print(&text)?;
    Ok(ExitCode::SUCCESS)
}
