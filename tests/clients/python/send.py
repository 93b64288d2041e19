"""Segment's analytics-python, unchanged, pointed at a closeflow server.

python send.py HOST WRITE_KEY (plain|gzip)
"""
import sys

from segment import analytics

host, write_key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
suffix = "gz" if mode == "gzip" else "py"
failures = []
analytics.write_key = write_key
analytics.host = host
analytics.gzip = mode == "gzip"
analytics.on_error = lambda e, batch: failures.append(repr(e))

user = f"u_{suffix}_1"
company = f"c_{suffix}"
analytics.identify(user, {"email": f"ada.{suffix}@acme.com", "name": "Ada Lovelace", "title": "CTO",
                          "company": {"id": company, "name": f"Acme {suffix}"}})
analytics.group(user, company, {"name": f"Acme {suffix}", "plan": "pro"})
analytics.track(user, "Signed Up", {"plan": "pro"})
analytics.flush()
analytics.shutdown()
if failures:
    print("analytics-python errors:", failures, file=sys.stderr)
    sys.exit(1)
