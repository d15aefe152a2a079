#!/usr/bin/env python3
"""Parse syslog datagrams (argv[1], a JSON file holding a list of strings)
with an RFC 5424 parser from PyPI (syslog-rfc5424-parser, not xdpsec's
code) and print them as JSON: [{"severity", "facility", "version",
"timestamp", "hostname", "appname", "procid", "msgid", "sd", "msg"}]. A
datagram the parser refuses raises (exit 1), which fails the test."""
import json
import sys

from syslog_rfc5424_parser import SyslogMessage

out = []
for text in json.load(open(sys.argv[1])):
    out.append(SyslogMessage.parse(text).as_dict())
print(json.dumps(out, default=str))
