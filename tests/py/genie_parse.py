#!/usr/bin/env python3
"""Parse xdpsec's show output with Cisco's genieparser (pyATS), offline.

argv[1] is a JSON file: {"cases": [{"sa": TEXT, "drops": TEXT, "ikev2": TEXT}, ...]}
with the text of `show crypto ipsec sa`, of `show platform hardware qfp
active feature ipsec datapath drops all` and of `show crypto ikev2 sa`
(each optional; the keys of PARSERS below name the other show commands). For each case this prints what the IOS XE
parsers ShowCryptoIpsecSa and
ShowPlatformHardwareQfpActiveFeatureIpsecDatapathDropsAll make of the text
(or the parser's error), as one JSON line on stdout. No device: genie parses
saved text when the parser is given `output=`.
"""
import json
import sys
from unittest import mock

from genie.libs.parser.iosxe.show_crypto import (
    ShowCryptoIkev2Proposal,
    ShowCryptoIkev2Sa,
    ShowCryptoIpsecSa,
    ShowCryptoSession,
)
from genie.libs.parser.iosxe.show_platform_hardware import (
    ShowPlatformHardwareQfpActiveFeatureIpsecDatapathDropsAll,
)
from genie.libs.parser.iosxe.show_sdwan import (
    ShowSdwanBfdSessions,
    ShowSdwanBfdSummary,
    ShowSdwanControlConnectionHistory,
    ShowSdwanControlConnections,
    ShowSdwanControlLocalProperties,
    ShowSdwanIpsecInboundConnections,
    ShowSdwanIpsecLocalsa,
    ShowSdwanIpsecOutboundConnections,
    ShowSdwanOmpPeers,
    ShowSdwanOmpTlocs,
    ShowSdwanTunnelStatistics,
)


def via_device(parser_cls):
    """The IOS XE ShowSdwanOmpTlocs and ShowSdwanOmpPeers parsers ignore
    `output=` (they only read `device.execute(...)`, and raise
    UnboundLocalError otherwise): hand them the text through a mocked device
    instead, as genie's own tests do."""

    class ViaDevice:
        def __init__(self, device):
            pass

        def parse(self, output):
            device = mock.Mock()
            device.execute = mock.Mock(return_value=output)
            return parser_cls(device=device).parse()

    return ViaDevice


# Which parser reads which text of a case.
PARSERS = {
    "sa": ShowCryptoIpsecSa,
    "drops": ShowPlatformHardwareQfpActiveFeatureIpsecDatapathDropsAll,
    "ikev2": ShowCryptoIkev2Sa,
    "ikev2_proposal": ShowCryptoIkev2Proposal,
    "session": ShowCryptoSession,
    "omp_tlocs": via_device(ShowSdwanOmpTlocs),
    "omp_peers": via_device(ShowSdwanOmpPeers),
    "control_connections": ShowSdwanControlConnections,
    "connection_history": ShowSdwanControlConnectionHistory,
    "bfd_sessions": ShowSdwanBfdSessions,
    "bfd_summary": ShowSdwanBfdSummary,
    "ipsec_inbound_connections": ShowSdwanIpsecInboundConnections,
    "ipsec_outbound_connections": ShowSdwanIpsecOutboundConnections,
    "ipsec_local_sa": ShowSdwanIpsecLocalsa,
    "tunnel_statistics": ShowSdwanTunnelStatistics,
    "control_local_properties": ShowSdwanControlLocalProperties,
}


def parse(parser_cls, text):
    try:
        return {"parsed": parser_cls(device=mock.Mock()).parse(output=text)}
    except Exception as e:  # SchemaEmptyParserError, SchemaMissingKeyError, ...
        return {"error": "%s: %s" % (type(e).__name__, e)}


with open(sys.argv[1]) as f:
    cases = json.load(f)["cases"]
out = []
for c in cases:
    out.append({k: parse(PARSERS[k], text) for k, text in c.items()})
# json turns the parsers' integer keys (ident numbers) into strings.
print(json.dumps(out))
