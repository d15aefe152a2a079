#!/usr/bin/env python3
"""Drive `xdpsec cli` with pyATS/Unicon as an IOS XE router, and report.

argv: TESTBED DEVICE MARKER LOGFILE. The testbed's connection spawns
`xdpsec cli` (tests/pyats/testbed.yaml). The script connects with Unicon's
iosxe defaults (which send `term length 0`, `term width 0`, `show version`,
`show version | include operating mode` and the `config term` ... `end`
block), runs show commands and filters through the connection, parses
`show crypto ipsec sa` and the drop table with genie through the connection,
then turns `terminal monitor` on, creates MARKER and waits (30 s at most) for
a `%CRYPTO-4-RECVD_PKT_INV_SPI` line to stream in. One JSON line on stdout.
"""
import json
import sys

from pyats.topology import loader

testbed, name, marker, logfile = sys.argv[1:5]
DROPS = "show platform hardware qfp active feature ipsec datapath drops all"

report = {}
dev = loader.load(testbed).devices[name]
try:
    dev.connect(
        log_stdout=False,
        logfile=logfile,
        learn_hostname=False,
        connection_timeout=60,
    )
    report["connected"] = True
    report["state"] = dev.state_machine.current_state
    report["show_version"] = dev.execute("show version")
    report["operating_mode"] = dev.execute("show version | include operating mode")
    report["sa"] = dev.parse("show crypto ipsec sa")
    report["drops"] = dev.parse(DROPS)
    report["include"] = dev.execute("show crypto ipsec sa | include pkts (en|de)caps")
    report["count"] = dev.execute("show crypto ipsec sa | count spi:")
    report["exclude"] = dev.execute(DROPS + " | exclude ^-|Drop Type| 0$")
    report["begin"] = dev.execute("show version | begin operating")
    report["section"] = dev.execute("show crypto ipsec sa | section inbound esp sas")
    # Configuration mode as Unicon enters and leaves it.
    dev.configure(["no logging console", "line vty 0 4", "exec-timeout 0 0"])
    report["after_configure"] = dev.state_machine.current_state
    # terminal monitor: log lines stream in while the session is idle.
    dev.execute("terminal monitor")
    open(marker, "w").close()
    dev.expect([r"%CRYPTO-4-RECVD_PKT_INV_SPI[^\r\n]*"], timeout=30)
    report["monitor"] = dev.spawn.match.match_output
    dev.execute("terminal no monitor")
    report["final_prompt_ok"] = dev.state_machine.current_state == "enable"
    dev.disconnect()
except Exception as e:  # the report says what failed
    report["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(report, default=str))
