//! Sequence reservations as a shell effect: nothing the datapath can use
//! relies on a reservation before the shell reported it on disk, and a
//! crash in between resumes above what was on disk.
use super::*;
use crate::seqstore::{BLOCK, SeqWrite};

/// The outbound SA of tunnel 0 in `snap`.
fn out0(snap: &xdpsec_datapath::sa::SaSnapshot) -> Arc<OutboundSa> {
    match snap.outbound(0) {
        Some(OutboundEntry::Active(sa)) => Arc::clone(sa),
        other => panic!("no active outbound SA: {other:?}"),
    }
}

/// The outbound SA of tunnel 0 the workers see.
fn published(o: &Owner) -> Arc<OutboundSa> {
    out0(&o.table.shared().load())
}

/// The one reservation write among `fx`'s shell work.
fn the_write(fx: &Effects) -> SeqWrite {
    let w: Vec<_> = fx
        .shell
        .iter()
        .filter_map(|op| match op {
            ShellOp::Reserve(w) => Some(w.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(w.len(), 1, "{:?}", fx.shell);
    w[0].clone()
}

fn no_write(fx: &Effects) {
    assert!(
        !fx.shell.iter().any(|op| matches!(op, ShellOp::Reserve(_))),
        "{:?}",
        fx.shell
    );
}

/// What the shell reports for `w`.
fn reported(w: &SeqWrite, error: Option<&str>) -> Input {
    Input::Shell(ShellEvent::Reserved {
        generation: w.generation,
        error: error.map(str::to_string),
    })
}

/// The reservation numbers in the file of `o`'s state directory.
fn on_disk(o: &Owner) -> String {
    std::fs::read_to_string(o.config.state_dir.join(crate::seqstore::FILE_NAME)).unwrap()
}

const OUT_KEY: &str = "101112131415161718191a1b1c1d1e1f000102030405060708090a0b0c0d0e0fdeadbeef";

/// Write `text` (MANUAL changed) as `o`'s config file, for a reload.
fn config_file(o: &Owner, text: &str) -> String {
    let text = format!("state_dir = \"{}\"\n{text}", o.config.state_dir.display());
    std::fs::write(&o.config_path, &text).unwrap();
    text
}

#[test]
fn a_running_sas_limit_is_raised_only_once_its_reservation_is_on_disk() {
    let t0 = Instant::now();
    let mut o = owner("reserve-tick", MANUAL, t0);
    let key = o.registry.by_index(0).unwrap().out_key.unwrap();
    // Start-up is synchronous: the first block is on disk before anything is published.
    assert_eq!(o.seq.reserved(key), BLOCK);
    assert!(on_disk(&o).contains(&format!(" {BLOCK}\n")));
    // The SA has used most of its block (as if it had sent that much).
    let c = tunnel_sa_changes(&o.config, 0, BLOCK - 10, BLOCK).unwrap();
    o.table.apply(vec![c.outbound], Duration::ZERO).unwrap();
    let sa = published(&o);
    assert_eq!((sa.last_seq(), sa.seq_limit()), (BLOCK - 10, BLOCK));

    // The tick reserves the next block in memory and asks the shell to
    // write it; the datapath keeps its limit until the shell reports it.
    let fx = o.handle(t0 + TICK, Input::Tick);
    let w = the_write(&fx);
    assert_eq!(o.seq.reserved(key), 2 * BLOCK);
    assert_eq!(sa.seq_limit(), BLOCK, "not raised before it is on disk");
    assert!(!on_disk(&o).contains(&format!(" {}\n", 2 * BLOCK)));
    // Ticks while the write is under way: no second write, no raise.
    let fx = o.handle(t0 + 2 * TICK, Input::Tick);
    no_write(&fx);
    assert_eq!(sa.seq_limit(), BLOCK);

    // The write failed: the limit stays, the error is logged once a
    // minute, the next tick tries again.
    let t1 = t0 + 3 * TICK;
    o.handle(
        t1,
        reported(&w, Some("writing sequences: No space left on device")),
    );
    assert_eq!(sa.seq_limit(), BLOCK);
    assert_eq!(o.seq_wait.error_logged, Some(t1));
    let fx = o.handle(t1 + TICK, Input::Tick);
    let w = the_write(&fx);
    o.handle(t1 + TICK, reported(&w, Some("again")));
    assert_eq!(o.seq_wait.error_logged, Some(t1), "rate-limited");
    assert_eq!(sa.seq_limit(), BLOCK);
    let fx = o.handle(t1 + 2 * TICK, Input::Tick);
    let w = the_write(&fx);

    // The shell writes it: now the limit goes up, without a new snapshot.
    w.write().unwrap();
    assert!(on_disk(&o).contains(&format!(" {}\n", 2 * BLOCK)));
    let fx = o.handle(t1 + 2 * TICK, reported(&w, None));
    assert_eq!(sa.seq_limit(), 2 * BLOCK);
    assert_eq!(fx.publishes, 0);
    no_write(&fx);
    assert!(o.seq_wait.raises.is_empty());
}

#[test]
fn a_reloaded_key_is_published_only_once_its_reservation_is_on_disk() {
    let t0 = Instant::now();
    let mut o = owner("reserve-reload", MANUAL, t0);
    let old = published(&o);
    let new_key = "99".repeat(36);
    config_file(&o, &MANUAL.replace(OUT_KEY, &new_key));

    // The reload decides the new SA (its number space reserved in
    // memory) and holds the batch: the workers keep the old SA.
    let fx = o.handle(t0, Input::Reload);
    assert_eq!(fx.publishes, 0, "nothing published before the write");
    let w = the_write(&fx);
    assert!(Arc::ptr_eq(&published(&o), &old));
    let staged = out0(&o.table.snapshot());
    assert!(!Arc::ptr_eq(&staged, &old));
    assert_eq!(
        (staged.last_seq(), staged.seq_limit()),
        (0, 0),
        "no number usable until the reservation is on disk"
    );
    // Other inputs meanwhile publish nothing either.
    let fx = o.handle(t0 + TICK, Input::Tick);
    assert_eq!(fx.publishes, 0);
    no_write(&fx);
    assert!(Arc::ptr_eq(&published(&o), &old));

    // On disk, reported: the new SA goes out in one snapshot, with its block.
    w.write().unwrap();
    let fx = o.handle(t0 + TICK, reported(&w, None));
    assert_eq!(fx.publishes, 1);
    let sa = published(&o);
    assert!(Arc::ptr_eq(&sa, &staged));
    assert_eq!((sa.last_seq(), sa.seq_limit()), (0, BLOCK));

    // A failed write: the held batch goes out (nothing else waits on a
    // broken disk) but its SA cannot send; the next tick's write raises it.
    config_file(&o, &MANUAL.replace(OUT_KEY, &"77".repeat(36)));
    let t1 = t0 + 2 * TICK;
    let fx = o.handle(t1, Input::Reload);
    let w = the_write(&fx);
    assert_eq!(fx.publishes, 0);
    let fx = o.handle(t1, reported(&w, Some("EIO")));
    assert_eq!(fx.publishes, 1);
    let sa = published(&o);
    assert_eq!((sa.last_seq(), sa.seq_limit()), (0, 0));
    let fx = o.handle(t1 + TICK, Input::Tick);
    let w = the_write(&fx);
    w.write().unwrap();
    o.handle(t1 + TICK, reported(&w, None));
    assert_eq!(sa.seq_limit(), BLOCK);

    // A write never reported holds the batch at most GATE_MAX.
    config_file(&o, &MANUAL.replace(OUT_KEY, &"55".repeat(36)));
    let t2 = t1 + 2 * TICK;
    let fx = o.handle(t2, Input::Reload);
    assert_eq!(fx.publishes, 0);
    let fx = o.handle(t2 + TICK, Input::Tick);
    assert_eq!(fx.publishes, 0);
    let fx = o.handle(t2 + super::super::reserve::GATE_MAX, Input::Tick);
    assert_eq!(fx.publishes, 1);
    assert_eq!(published(&o).seq_limit(), 0, "it cannot send");
}

#[test]
fn a_crash_before_the_write_resumes_above_what_was_on_disk() {
    let t0 = Instant::now();
    let mut o = owner("reserve-crash", MANUAL, t0);
    let dir = o.config.state_dir.clone();
    let key = o.registry.by_index(0).unwrap().out_key.unwrap();
    // A reload that keeps the key but changes the SA (ESN): the new SA
    // resumes above the old one's reservation, BLOCK.
    let text = config_file(
        &o,
        &MANUAL.replace(
            "cipher = \"aes256-gcm\"",
            "cipher = \"aes256-gcm\"\nesn = true",
        ),
    );
    let fx = o.handle(t0, Input::Reload);
    assert!(the_write(&fx).generation > 0);
    assert_eq!(o.seq.reserved(key), 2 * BLOCK, "in memory");
    // The highest number any SA of this owner may use, published or not.
    let usable = out0(&o.table.shared().load())
        .seq_limit()
        .max(out0(&o.table.snapshot()).seq_limit());
    // Crash: the shell never wrote it.
    drop(o);

    let store = SeqStore::open(&dir).unwrap();
    let durable = store.reserved(key);
    drop(store);
    assert_eq!(durable, BLOCK);
    assert!(usable <= durable, "{usable} usable, {durable} on disk");
    // Restart from the state directory: the SA resumes above it.
    let o = owner_at(&dir, &text[text.find('\n').unwrap() + 1..], t0);
    let sa = published(&o);
    assert_eq!((sa.last_seq(), sa.seq_limit()), (BLOCK, 2 * BLOCK));
    assert!(sa.last_seq() >= usable);
}

/// A reload that adds `dpd_retry_seconds` to an IKE tunnel is refused as
/// a change of `dpd_seconds` is (an IKE setting: restart to apply it), and
/// nothing of it is applied.
#[test]
fn a_reload_refuses_a_changed_dpd_retry_interval() {
    let t0 = Instant::now();
    let with_dpd = IKE_A.replace("initiate = true", "initiate = true\ndpd_seconds = 10");
    let mut o = owner("reload-dpd-retry", &with_dpd, t0);
    for changed in [
        with_dpd.replace(
            "dpd_seconds = 10",
            "dpd_seconds = 10\ndpd_retry_seconds = 2",
        ),
        with_dpd.replace("dpd_seconds = 10", "dpd_seconds = 20"),
    ] {
        config_file(&o, &changed);
        let fx = cmd(&mut o, t0, "request platform software xdpsec reload");
        let r = fx.reply.unwrap();
        assert!(
            !r.ok
                && r.output.contains(
                    "`tunnel Tunnel2 (IKE settings)` changed; restart xdpsec to apply it"
                ),
            "{}",
            r.output
        );
        let crate::config::TunnelKind::Ike(k) = &o.config.tunnels[0].kind else {
            panic!("not IKE")
        };
        assert_eq!((k.dpd, k.dpd_retry), (Some(Duration::from_secs(10)), None));
    }
}
