# Segment's analytics-python, unchanged: python segment_client.py [HOST] [WRITE_KEY] [gzip]
import sys

from segment import analytics

host = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
write_key = sys.argv[2] if len(sys.argv) > 2 else "wk_default"
gzip = sys.argv[3] if len(sys.argv) > 3 else ""
failures = []
analytics.host = host
analytics.write_key = write_key
analytics.gzip = gzip == "gzip"  # off by default
analytics.on_error = lambda e, batch: failures.append(repr(e))

analytics.identify("u_ada", {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@acme.com", "title": "CTO",
                             "plan": "pro", "company": {"id": "c_acme", "name": "Acme"}})
analytics.track("u_ada", "Signed Up", {"plan": "pro"})
analytics.shutdown()
sys.exit("errors: " + ", ".join(failures) if failures else 0)
