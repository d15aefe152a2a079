//! `show sdwan control connection-history` on the edge and the controller:
//! the IOS XE layout (17.4 and later, with ORGANIZATION) that genieparser's
//! `ShowSdwanControlConnectionHistory` reads, and the `--json` value. A
//! pure function of the cores' rows.
use std::{
    fmt::Write,
    net::Ipv4Addr,
    time::{Instant, SystemTime},
};

use serde_json::{Value, json};
use xdpsec_omp::history::{ErrorCode, HistoryRow};

/// `2022-01-19T06:18:57+0000`, as IOS shows DOWNTIME.
fn downtime(at: Instant, now: Instant, wall: SystemTime) -> String {
    let t = wall
        .checked_sub(now.saturating_duration_since(at))
        .unwrap_or(wall);
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The width of the LOCAL ERROR and REMOTE ERROR columns: IOS's 10,
/// widened to the longest code (DUPSYSIPDEL has 11) so every row lines up.
fn code_width() -> usize {
    ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().len())
        .max()
        .unwrap_or(0)
        .max(10)
}

/// The legend IOS prints above the table, for the codes xdpsec uses.
fn legend() -> String {
    let mut t = String::from("Legend for Errors\n");
    let codes = ErrorCode::ALL;
    let w = code_width();
    let half = codes.len().div_ceil(2);
    for i in 0..half {
        let l = codes[i];
        let left = format!("{:<w$} - {}", l.as_str(), l.description());
        match codes.get(i + half) {
            Some(r) => {
                let _ = writeln!(
                    t,
                    "{left:<lw$} {:<w$} - {}",
                    r.as_str(),
                    r.description(),
                    lw = w + 41
                );
            }
            None => {
                let _ = writeln!(t, "{left}");
            }
        }
    }
    t
}

/// The rows, newest first, as text and JSON. `now` and `wall` are the same
/// moment on the monotonic and the wall clock (DOWNTIME is wall time).
pub fn render(rows: &[HistoryRow], now: Instant, wall: SystemTime) -> (String, Value) {
    let mut t = legend();
    let w = code_width();
    let _ = write!(
        t,
        "\n                                                                       PEER                      PEER\n\
PEER     PEER     PEER             SITE        DOMAIN PEER             PRIVATE  PEER             PUBLIC                                   {:<w$} {:<w$} REPEAT\n\
TYPE     PROTOCOL SYSTEM IP        ID          ID     PRIVATE IP       PORT     PUBLIC IP        PORT    LOCAL COLOR      STATE           {:<w$} {:<w$} COUNT ORGANIZATION            DOWNTIME\n",
        "LOCAL", "REMOTE", "ERROR", "ERROR"
    );
    t.push_str(&"-".repeat(166 + 2 * w));
    t.push('\n');
    let mut list = Vec::new();
    for r in rows {
        let sys = r.system_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string();
        let ip = r
            .peer_ip
            .map_or_else(|| "0.0.0.0".to_string(), |a| a.to_string());
        let down = downtime(r.downtime, now, wall);
        let org = if r.organization.is_empty() {
            "-"
        } else {
            &r.organization
        };
        let _ = writeln!(
            t,
            "{:<8} {:<8} {:<16} {:<11} {:<6} {:<16} {:<8} {:<16} {:<7} {:<16} {:<15} {:<w$} {:<w$} {:<5} {:<23} {}",
            r.peer_type,
            "tls",
            sys,
            r.site_id,
            1,
            ip,
            r.peer_port,
            ip,
            r.peer_port,
            r.color,
            r.state,
            r.local_error.as_str(),
            r.remote_error.as_str(),
            r.repeat_count,
            org,
            down
        );
        list.push(json!({
            "peer_type": r.peer_type,
            "peer_protocol": "tls",
            "peer_system_ip": sys,
            "site_id": r.site_id,
            "domain_id": 1,
            "peer_private_ip": ip,
            "peer_private_port": r.peer_port,
            "peer_public_ip": ip,
            "peer_public_port": r.peer_port,
            "local_color": r.color,
            "state": r.state,
            "local_error": r.local_error.as_str(),
            "remote_error": r.remote_error.as_str(),
            "repeat_count": r.repeat_count,
            "organization": r.organization,
            "downtime": down,
        }));
    }
    (t, json!({ "history": list }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rows_render_in_the_ios_layout() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_642_573_137);
        let rows = vec![HistoryRow {
            peer_type: "vsmart",
            system_ip: Some(Ipv4Addr::new(198, 51, 100, 10)),
            site_id: 0,
            peer_ip: Some("198.51.100.10".parse().unwrap()),
            peer_port: 23456,
            color: "biz-internet".into(),
            state: "challenge",
            local_error: ErrorCode::NoErr,
            remote_error: ErrorCode::SerNtPres,
            repeat_count: 3,
            organization: "xdpsec-lab".into(),
            downtime: now,
        }];
        let (text, v) = render(&rows, now, wall);
        assert!(
            text.contains("SERNTPRES   - Serial Number not present."),
            "{text}"
        );
        let line = text.lines().last().unwrap();
        assert!(
            line.starts_with("vsmart   tls      198.51.100.10"),
            "{line}"
        );
        assert!(
            line.contains(" NOERR       SERNTPRES   3     xdpsec-lab"),
            "{line}"
        );
        assert!(line.ends_with("2022-01-19T06:18:57+0000"), "{line}");
        assert_eq!(v["history"][0]["remote_error"], "SERNTPRES");
    }

    #[test]
    fn the_longest_code_fits_its_column() {
        let now = Instant::now();
        let row = |local, remote| HistoryRow {
            peer_type: "vedge",
            system_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
            site_id: 100,
            peer_ip: Some("198.51.100.21".parse().unwrap()),
            peer_port: 12346,
            color: "biz-internet".into(),
            state: "tear_down",
            local_error: local,
            remote_error: remote,
            repeat_count: 12,
            organization: "xdpsec-lab".into(),
            downtime: now,
        };
        let rows = [
            row(ErrorCode::DupSysIpDel, ErrorCode::NoErr),
            row(ErrorCode::NoErr, ErrorCode::DupSysIpDel),
            row(ErrorCode::SerNtPres, ErrorCode::CtOrgNmMis),
        ];
        let (text, _) = render(&rows, now, SystemTime::UNIX_EPOCH);
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().find(|l| l.contains("COUNT")).unwrap();
        // REMOTE ERROR, REPEAT COUNT and ORGANIZATION start under their
        // headers in every row.
        let col = |l: &str, word: &str, nth: usize| l.match_indices(word).nth(nth).unwrap().0;
        let (remote, count, org) = (
            col(header, "ERROR", 1),
            col(header, "COUNT", 0),
            col(header, "ORGANIZATION", 0),
        );
        for (l, r) in lines[lines.len() - 3..].iter().zip(&rows) {
            assert_eq!(
                &l[remote..remote + r.remote_error.as_str().len()],
                r.remote_error.as_str(),
                "{l}"
            );
            assert_eq!(&l[count..count + 2], "12", "{l}");
            assert_eq!(&l[org..org + 10], "xdpsec-lab", "{l}");
        }
        assert!(text.contains("DUPSYSIPDEL - "), "{text}");
    }
}
