#!/usr/bin/env python3
"""Parse xdpsec's show output with Cisco's genieparser (pyATS), offline.

argv[1] is a JSON file: {"cases": [{"sa": TEXT, "drops": TEXT}, ...]} with
the text of `show crypto ipsec sa` and of `show platform hardware qfp active
feature ipsec datapath drops all`. For each case this prints what the IOS XE
parsers ShowCryptoIpsecSa and
ShowPlatformHardwareQfpActiveFeatureIpsecDatapathDropsAll make of the text
(or the parser's error), as one JSON line on stdout. No device: genie parses
saved text when the parser is given `output=`.
"""
import json
import sys
from unittest import mock

from genie.libs.parser.iosxe.show_crypto import ShowCryptoIpsecSa
from genie.libs.parser.iosxe.show_platform_hardware import (
    ShowPlatformHardwareQfpActiveFeatureIpsecDatapathDropsAll,
)


def parse(parser_cls, text):
    try:
        return {"parsed": parser_cls(device=mock.Mock()).parse(output=text)}
    except Exception as e:  # SchemaEmptyParserError, SchemaMissingKeyError, ...
        return {"error": "%s: %s" % (type(e).__name__, e)}


with open(sys.argv[1]) as f:
    cases = json.load(f)["cases"]
out = []
for c in cases:
    out.append({
        "sa": parse(ShowCryptoIpsecSa, c["sa"]),
        "drops": parse(ShowPlatformHardwareQfpActiveFeatureIpsecDatapathDropsAll, c["drops"]),
    })
# json turns the parsers' integer keys (ident numbers) into strings.
print(json.dumps(out))
