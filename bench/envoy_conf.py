"""An examples/authz Envoy config with its addresses replaced, printed; shared by bench/authz.sh and
bench/authz-instructions.sh. Usage: envoy_conf.py EXAMPLE PORT AUTHZ_ADDR UPSTREAM_PORT [--no-filter] [--timeout T]
(PORT 0: any free port, read back from Envoy's admin; --no-filter: the same proxy without ext_authz)."""
import sys

args = sys.argv[1:]
example, port, authz, up = args[:4]
host, aport = authz.rsplit(":", 1)
s = open("examples/authz/" + example).read()
s = s.replace('uri: "http://127.0.0.1:8080"', 'uri: "http://%s"' % authz)
s = s.replace("{ address: 0.0.0.0, port_value: 10000 }", "{ address: 127.0.0.1, port_value: %s }" % port)
s = s.replace("{ address: 127.0.0.1, port_value: 9901 }", "{ address: 127.0.0.1, port_value: 0 }")
s = s.replace("{ address: 127.0.0.1, port_value: 8080 }", "{ address: %s, port_value: %s }" % (host, aport))
s = s.replace("{ address: 127.0.0.1, port_value: 8000 }", "{ address: 127.0.0.1, port_value: %s }" % up)
if "--timeout" in args:
    s = s.replace("timeout: 0.5s", "timeout: %s" % args[args.index("--timeout") + 1])
if "--no-filter" in args:
    a = s.index("          - name: envoy.filters.http.ext_authz")
    b = s.index("          - name: envoy.filters.http.router")
    s = s[:a] + s[b:]
print(s)
