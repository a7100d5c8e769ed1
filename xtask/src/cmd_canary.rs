//! `cargo xtask canary`: v2 of the api beside v1 behind HAProxy, a staircase of
//! weights each held for the sample a two-proportion z-test needs, gates at every
//! step, automatic rollback to 0% with its time and blast radius.

use crate::exit::CheckFailed;
use crate::harness::{self, LocalSession, RunDir, Work};
use crate::platform_args::{Choice, PlatformArgs};
use crate::progressive::clients::{ClientSettings, Judge};
use crate::progressive::gate_args::GateArgs;
use crate::progressive::lab;
use crate::progressive::model::{BlastRadius, CanaryReport, Settings};
use crate::progressive::routing::{self, RuleReport, RuleSettings};
use crate::progressive::shadow::{self, ShadowReport, ShadowSettings};
use crate::progressive::shadow_writes;
use crate::progressive::stats::{human, plan_duration, PlanDuration};
use crate::progressive::{report, steps};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zerodrop_load::Profile;
use zerodrop_platform::router::{JobsSpec, MatchOn, RouteRule, RoutedFleet, TwoVersions, TwoVersionsSpec};
use zerodrop_platform::Platform;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// The short profile: steps 5,10,25,50,100 at 250 req/s, detecting 0.1% vs 2%
    /// (a few minutes on a 2-core machine).
    #[arg(long)]
    quick: bool,
    /// v2's deliberate regression: `none`, `errors=2%`, `latency=+80ms`.
    #[arg(long, default_value = "none")]
    regression: String,
    /// Canary weights in percent, comma-separated, down to 0.1 (default 1,5,10,25,50,100).
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<f64>>,
    /// Requests per second the load sends through the routing tier (default 300; quick 250).
    #[arg(long)]
    qps: Option<u32>,
    #[command(flatten)]
    gates: GateArgs,
    /// Low-traffic guard: refuse when the steps below 100% would hold longer than this.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_duration: Option<Duration>,
    /// api pods per version.
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Exit 3 unless the outcome is this one (for CI): promoted, rolled-back, refused.
    #[arg(long)]
    expect: Option<Outcome>,
    /// Testers reach v2 by this header whatever the weight: NAME=VALUE (e.g. x-tester=1).
    #[arg(long, value_name = "NAME=VALUE", conflicts_with = "route_cookie")]
    route_header: Option<String>,
    /// Testers reach v2 by this cookie whatever the weight: NAME=VALUE (e.g. zd_group=beta).
    #[arg(long, value_name = "NAME=VALUE")]
    route_cookie: Option<String>,
    /// Share of the load sent by testers carrying the rule's header or cookie, in percent.
    #[arg(long, default_value_t = 5.0)]
    testers: f64,
    /// The failure demo: a hop in front of the router strips the rule's header (or the
    /// cookie header). The run then checks that no tester reached v2, and says so.
    #[arg(long)]
    strip_hop: bool,
    /// The load names this many clients (Zipf-like: a few heavy, a long tail) in
    /// `x-zd-client`, and each step is also analysed by client.
    #[arg(long, value_name = "N")]
    clients: Option<u32>,
    /// The Zipf exponent of the clients' volumes (1: client c0 sends about 1/H(N)).
    #[arg(long, default_value_t = 1.0, requires = "clients")]
    zipf: f64,
    /// Sticky sessions: the router pins each client to one side by a hash of its header.
    #[arg(long, requires = "clients")]
    sticky: bool,
    /// What the error gate judges by: every request one trial, or each client once.
    #[arg(long, value_enum, default_value_t = Judge::Request, requires = "clients")]
    judge: Judge,
    /// A defect both versions carry (e.g. `errors=5%@top=1`: the heaviest client hits a
    /// known bug on v1 and v2 alike); v2 carries it besides `--regression`.
    #[arg(long, value_name = "DEFECT", requires = "clients")]
    known_bug: Option<String>,
    /// Shadow traffic first: for a phase at weight 0 (15 s quick, else 30 s), this
    /// percentage of the requests is also sent as a copy to v2, and v2's answers are
    /// compared with v1's pair by pair; a v2 that does worse stops there, before any
    /// user reaches it.
    #[arg(long, value_name = "PERCENT")]
    shadow: Option<f64>,
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    #[command(flatten)]
    platform: PlatformArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Outcome {
    Promoted,
    RolledBack,
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled back",
            Outcome::Refused => "refused",
        }
    }
}

fn settings(a: &Args) -> Result<Settings> {
    let steps = a.steps.clone().unwrap_or_else(|| {
        if a.quick {
            vec![5.0, 10.0, 25.0, 50.0, 100.0]
        } else {
            vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0]
        }
    });
    if steps.is_empty() || steps.iter().any(|w| !(0.1..=100.0).contains(w) || (w * 10.0).fract() != 0.0) {
        bail!("--steps: every weight must be between 0.1 and 100 in steps of 0.1 (HAProxy splits in permille), got {steps:?}");
    }
    if steps.windows(2).any(|p| p[1] <= p[0]) || steps.last() != Some(&100.0) {
        bail!("--steps must rise and end at 100, got {steps:?}");
    }
    let detect = a.gates.detect(a.quick)?;
    let rule = match (&a.route_header, &a.route_cookie) {
        (Some(h), _) => Some(RouteRule::parse(MatchOn::Header, h)?),
        (None, Some(c)) => Some(RouteRule::parse(MatchOn::Cookie, c)?),
        (None, None) if a.strip_hop => bail!("--strip-hop needs a rule to strip: add --route-header or --route-cookie"),
        (None, None) => None,
    };
    if rule.is_some() && !(0.1..=50.0).contains(&a.testers) {
        bail!("--testers must be between 0.1 and 50 (percent of the load), got {}", a.testers);
    }
    let routing = rule.map(|rule| RuleSettings { rule, testers_pct: a.testers, strip_hop: a.strip_hop });
    let clients = match a.clients {
        None => None,
        Some(count) if !(2..=zerodrop_load::MAX_CLIENTS).contains(&count) => {
            bail!("--clients must be between 2 and {}, got {count}", zerodrop_load::MAX_CLIENTS)
        }
        Some(_) if !(0.0..=3.0).contains(&a.zipf) => bail!("--zipf must be between 0 and 3, got {}", a.zipf),
        Some(count) => Some(ClientSettings {
            count,
            zipf_s: a.zipf,
            sticky: a.sticky,
            known_bug: a.known_bug.clone().filter(|k| k.trim() != "none"),
            judge: a.judge,
        }),
    };
    if clients.as_ref().is_some_and(|c| c.sticky) && routing.is_some() {
        bail!("--sticky and a routing rule (--route-header/--route-cookie) are separate lessons: use one at a time");
    }
    let shadow = match a.shadow {
        Some(pct) if !(1.0..=100.0).contains(&pct) => {
            bail!("--shadow must be between 1 and 100 (percent of the requests copied to v2), got {pct}")
        }
        Some(pct) => Some(ShadowSettings { copy_pct: pct, phase_s: if a.quick { 15.0 } else { 30.0 } }),
        None => None,
    };
    if a.replicas == 0 || a.replicas > 20 {
        bail!("--replicas must be 1..=20");
    }
    Ok(Settings {
        regression: a.regression.clone(),
        steps_pct: steps,
        qps: a.qps.unwrap_or(if a.quick { 250 } else { 300 }).clamp(1, 2000),
        replicas: a.replicas,
        detect,
        gates: a.gates.gates(),
        final_hold_s: if a.quick { 10.0 } else { 30.0 },
        max_duration_s: a.max_duration.unwrap_or(Duration::from_secs(if a.quick { 300 } else { 1800 })).as_secs_f64(),
        routing,
        clients,
        shadow,
    })
}

/// v1, v2 with the regression under test, the run's routing rule if any, the sticky
/// split and the defect both versions share when the run names clients, and the jobs'
/// queues and ledgers when the shadow copies jobs.
fn spec(cfg: &Settings, jobs: Option<JobsSpec>) -> TwoVersionsSpec {
    let mut routing = cfg.routing.as_ref().map(RuleSettings::routing).unwrap_or_default();
    let mut s = TwoVersionsSpec::v2_with(cfg.replicas, &cfg.regression);
    if let Some(c) = &cfg.clients {
        routing.sticky = c.sticky_key();
        if let Some(k) = &c.known_bug {
            s.v1.regression = k.clone();
            s.v2.regression = c.v2_regression(&cfg.regression);
        }
    }
    TwoVersionsSpec { routing, jobs, ..s }
}

/// The shadow phase copies jobs, so its fleet runs workers and ledgers of the run's own.
fn jobs(cfg: &Settings, run: &RunDir) -> Option<JobsSpec> {
    cfg.shadow.as_ref().map(|_| shadow_writes::jobs_spec(&run.id))
}

pub async fn run(a: Args) -> Result<()> {
    let cfg = settings(&a)?;
    let n = cfg.detect.sample_size();
    let plan = plan_duration(n, cfg.qps as f64, &cfg.steps_pct);
    let choice = a.platform.choose()?;
    if choice == Choice::KindPlan {
        let run = RunDir::new(&a.out);
        let opts = a.platform.kind_options(&run);
        let p = crate::progressive::kind_plan::canary(&opts, &spec(&cfg, jobs(&cfg, &run)), &cfg, n)?;
        harness::print_plan("canary", "the plan", &p);
        return Ok(());
    }
    let run = RunDir::new(&a.out);
    let r = CanaryReport {
        run_id: run.id.clone(),
        command: RunDir::command(),
        started_at: lab::started_at(),
        machine: crate::experiment::machine(),
        settings: cfg.clone(),
        sample_size: n,
        plan: plan.clone(),
        outcome: Outcome::Refused.as_str().into(),
        steps: Vec::new(),
        rollback: None,
        blast_radius: None,
        agreement: None,
        load: None,
        routing: None,
        shadow: None,
        timeline: Vec::new(),
        pod_seconds: 0.0,
        wall_s: 0.0,
    };
    if plan.total_s > cfg.max_duration_s {
        run.create()?;
        report::write(&r, &run.dir)?;
        eprintln!(
            "[canary] refused: {n} canary requests per step at {} req/s need {} over the steps below 100% (limit {}); \
             use blue-green (bake {}) or larger steps. Report: {}",
            cfg.qps,
            human(plan.total_s),
            human(cfg.max_duration_s),
            human(plan.blue_green_bake_s),
            run.dir.join("report.md").display()
        );
        return expect(a.expect, Outcome::Refused);
    }
    let started = |run: &RunDir| {
        eprintln!(
            "zerodrop canary {}: regression {}, steps {:?}%, {} req/s, {n} canary requests per step (about {})",
            run.id,
            cfg.regression,
            cfg.steps_pct,
            cfg.qps,
            human(plan.total_s)
        )
    };
    let work = Canary { cfg: cfg.clone(), jobs: jobs(&cfg, &run), n, log_dir: run.dir.join("logs"), report: r };
    let (outcome, r) = harness::on_chosen(
        choice,
        &a.platform,
        &run,
        LocalSession::routing_tier(),
        "the local platform needs Linux (network and PID namespaces); use --platform kind elsewhere",
        KIND_ROLL_TIMEOUT,
        started,
        work,
    )
    .await?;
    report::write(&r, &run.dir)?;
    eprintln!("[canary] {}: report {}", r.outcome, run.dir.join("report.md").display());
    if let Some(ag) = &r.agreement {
        if !ag.within_1pct {
            return Err(CheckFailed(format!("HAProxy's and the apps' counts differ by {:.2}%", ag.max_diff_pct)).into());
        }
    }
    if let Some(Err(e)) = r.routing.as_ref().map(RuleReport::check) {
        return Err(CheckFailed(e).into());
    }
    if let Some(Err(e)) = r.shadow.as_ref().map(ShadowReport::check) {
        return Err(CheckFailed(e).into());
    }
    // A known bug fails requests on both versions by design; otherwise a promoted v2
    // must not have failed a request.
    let known_bug = cfg.clients.as_ref().is_some_and(|c| c.known_bug.is_some());
    if outcome == Outcome::Promoted && !known_bug && r.load.as_ref().is_some_and(|l| l.failed > 0) {
        let failed = r.load.as_ref().map(|l| l.failed).unwrap_or(0);
        return Err(CheckFailed(format!("promoted, but {failed} requests failed")).into());
    }
    expect(a.expect, outcome)
}

fn expect(want: Option<Outcome>, got: Outcome) -> Result<()> {
    match want {
        Some(w) if w != got => {
            Err(CheckFailed(format!("the canary was {}, expected {}", got.as_str(), w.as_str())).into())
        }
        None if got != Outcome::Promoted => Err(CheckFailed(format!("the canary was {}", got.as_str())).into()),
        _ => Ok(()),
    }
}

/// Bounds a rolling deploy on kind; the two versions' own rollouts have theirs
/// (`kind::two_versions::rollout_limit`).
pub const KIND_ROLL_TIMEOUT: Duration = Duration::from_secs(300);

/// The canary on a platform that can run two versions behind a routing tier.
struct Canary {
    cfg: Settings,
    jobs: Option<JobsSpec>,
    n: u64,
    log_dir: PathBuf,
    report: CanaryReport,
}

impl<P: TwoVersions + Platform> Work<P> for Canary {
    type Output = (Outcome, CanaryReport);

    async fn run(self, mut platform: P) -> Result<Self::Output> {
        let Canary { cfg, jobs, n, log_dir, mut report } = self;
        // The runner's own connections, for the queues, the schemas and the reconciling.
        let backing = match &jobs {
            Some(j) => {
                let b = crate::backing::Backing::connect(&platform).await?;
                shadow_writes::prepare(&b, j).await?;
                Some(b)
            }
            None => None,
        };
        let fleet =
            platform.two_versions(&spec(&cfg, jobs.clone()), &log_dir).await.context("starting v1, v2 and HAProxy")?;
        let mut shadow_load = None;
        let outcome = drive(&fleet, &cfg, n, &mut report, &mut shadow_load).await;
        // Before the fleet goes: its workers apply what is still queued.
        let writes = match (&backing, &jobs, &shadow_load) {
            (Some(b), Some(j), Some(load)) if outcome.is_ok() => {
                eprintln!("[canary] shadow: reconciling the users' and the shadow's ledgers");
                Some(shadow_writes::reconcile(b, j, load).await)
            }
            _ => None,
        };
        report.pod_seconds = fleet.pod_seconds();
        fleet.down().await;
        if let Some(b) = backing {
            b.close().await;
        }
        // A ledger that cannot be read fails the run's check, not its report.
        match (writes, report.shadow.as_mut()) {
            (Some(Ok(w)), Some(s)) => s.writes = Some(w),
            (Some(Err(e)), Some(s)) => s.writes_unread = Some(format!("{e:#}")),
            _ => {}
        }
        Ok((outcome?, report))
    }
}

/// How long the load runs: past every step and the final hold. By weight the steps take
/// about the plan; a sticky split sends v2 a share set by which clients hash there, not by
/// the weight, so then the load must outlast every step's limit
/// ([`steps::step_limit_s`]).
fn load_seconds(cfg: &Settings, plan: &PlanDuration) -> f64 {
    let steps_s = if cfg.clients.as_ref().is_some_and(|c| c.sticky) {
        plan.per_step_s.iter().map(|(_, s)| steps::step_limit_s(*s)).sum()
    } else {
        plan.total_s * 1.5
    };
    steps_s + cfg.final_hold_s + 25.0
}

/// The shadow phase: its own load, with copies to v2, run to its end and compared pair
/// by pair. Before the steps' load starts, so no step counts a copy.
async fn shadow_phase(
    fleet: &impl RoutedFleet,
    cfg: &Settings,
    s: &ShadowSettings,
    ticker: &mut steps::Ticker,
) -> Result<(ShadowReport, zerodrop_load::RunResult)> {
    eprintln!(
        "[canary] shadow: {}% of {} req/s ({}% of them jobs) copied to v2 for {:.0} s at weight 0",
        s.copy_pct,
        cfg.qps,
        shadow::JOB_SHARE_PCT,
        s.phase_s
    );
    let profile = lab::profile(cfg.qps, Duration::from_secs_f64(s.phase_s));
    let load = fleet.start_load(Profile { mirror: Some(s.mirror()), mix: shadow::mix(), ..profile }).await?;
    while !load.is_finished() {
        ticker.hold(fleet, Duration::from_secs(1)).await?;
    }
    let result = load.await.context("the shadow load generator panicked")??;
    let report = shadow::analyse(&result, s, &cfg.gates);
    eprintln!("[canary] shadow: {}", report.sentence());
    Ok((report, result))
}

/// The run's end, however it came: a last snapshot once the last answers are counted,
/// the two sources' agreement since `start`, the load, the timeline and the outcome.
/// Returns the last snapshot.
async fn finish(
    fleet: &impl RoutedFleet,
    mut ticker: steps::Ticker,
    start: &zerodrop_platform::router::Snapshot,
    load: &zerodrop_load::RunResult,
    r: &mut CanaryReport,
    outcome: Outcome,
) -> Result<zerodrop_platform::router::Snapshot> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = ticker.tick(fleet).await?;
    r.agreement = Some(lab::agreement(&last, start));
    r.load = Some(lab::summarise(load));
    r.wall_s = ticker.now_s();
    r.timeline = ticker.ticks;
    r.outcome = outcome.as_str().into();
    Ok(last)
}

/// The shadow phase's load, if any, is left in `shadow_load` for the ledgers' check.
async fn drive(
    fleet: &impl RoutedFleet,
    cfg: &Settings,
    n: u64,
    r: &mut CanaryReport,
    shadow_load: &mut Option<zerodrop_load::RunResult>,
) -> Result<Outcome> {
    let t0 = Instant::now();
    let start = fleet.snapshot().await?;
    let mut ticker = steps::Ticker::new(t0, start.clone());
    if let Some(s) = &cfg.shadow {
        let (report, load) = shadow_phase(fleet, cfg, s, &mut ticker).await?;
        let caught = report.caught;
        r.shadow = Some(report);
        if caught {
            finish(fleet, ticker, &start, &load, r, Outcome::RolledBack).await?;
            *shadow_load = Some(load);
            return Ok(Outcome::RolledBack);
        }
        *shadow_load = Some(load);
    }
    // The steps' own baseline: the blast radius counts no copy.
    let first = ticker.tick(fleet).await?;
    let load_s = load_seconds(cfg, &r.plan);
    let profile = lab::profile(cfg.qps, Duration::from_secs_f64(load_s));
    let load = fleet
        .start_load(Profile {
            mark: cfg.routing.as_ref().map(RuleSettings::mark),
            clients: cfg.clients.as_ref().map(ClientSettings::load),
            ..profile
        })
        .await?;
    let load_started = Instant::now();
    // Traffic on v1 alone first: connections open, caches warm. With a routing rule,
    // the testers alone reach v2 then, and this phase judges the rule (`routing`).
    ticker.hold(fleet, Duration::from_secs(if cfg.routing.is_some() { 6 } else { 3 })).await?;
    let before_steps = ticker.tick(fleet).await?;
    // The load's clock starts within a second of ours, on either platform.
    let testers_only_s = (load_started.elapsed().as_secs_f64() - 1.0).max(0.0);
    let (steps, rollback) = steps::run(fleet, cfg, n, &mut ticker).await?;
    if load.is_finished() {
        bail!(
            "the load ended ({load_s:.0} s) before the steps did ({:.0} s): the last step judged no traffic; \
             this is a bug in the load's length, please report it",
            ticker.now_s()
        );
    }
    let at_decision = ticker.tick(fleet).await?;
    let window_s = ticker.now_s() - steps.first().map(|s| s.start_s).unwrap_or(0.0);
    eprintln!("[canary] waiting for the load to finish ({load_s:.0} s in all)");
    while !load.is_finished() {
        ticker.hold(fleet, Duration::from_secs(1)).await?;
    }
    let result = load.await.context("the load generator panicked")??;
    let outcome = if rollback.is_some() { Outcome::RolledBack } else { Outcome::Promoted };
    let last = finish(fleet, ticker, &start, &result, r, outcome).await?;
    let canary_total = last.router.1.since(first.router.1);
    let all = |s: &zerodrop_platform::router::Snapshot| s.router.0.requests + s.router.1.requests;
    let rate =
        if canary_total.requests == 0 { 0.0 } else { canary_total.http_5xx as f64 / canary_total.requests as f64 };
    let fleet_requests = all(&at_decision) - all(&before_steps).min(all(&at_decision));
    r.blast_radius = Some(BlastRadius {
        canary_requests: canary_total.requests,
        canary_errors: canary_total.http_5xx,
        window_s,
        all_at_once_requests: fleet_requests,
        all_at_once_errors_expected: fleet_requests as f64 * rate,
        how: "computed: the fleet's measured traffic over the canary's window times v2's measured error rate".into(),
    });
    r.routing = cfg.routing.clone().map(|s| routing::count(&result, s, testers_only_s));
    r.steps = steps;
    r.rollback = rollback;
    Ok(outcome)
}
