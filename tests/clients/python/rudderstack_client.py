# RudderStack's rudder-sdk-python, unchanged: python rudderstack_client.py [HOST] [WRITE_KEY] [nogzip]
import sys

import rudderstack.analytics as rudder_analytics

host = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
write_key = sys.argv[2] if len(sys.argv) > 2 else "wk_default"
gzip = sys.argv[3] if len(sys.argv) > 3 else ""
failures = []
rudder_analytics.dataPlaneUrl = host  # it posts to HOST/v1/batch
rudder_analytics.write_key = write_key
rudder_analytics.gzip = gzip != "nogzip"  # on by default
rudder_analytics.on_error = lambda e, batch: failures.append(repr(e))

# Its identify sends the traits in context.traits only: closeflow reads them as `traits`.
rudder_analytics.identify("u_ada", {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@acme.com", "title": "CTO",
                                    "plan": "pro", "company": {"id": "c_acme", "name": "Acme"}})
rudder_analytics.track("u_ada", "Signed Up", {"plan": "pro"})
rudder_analytics.shutdown()
sys.exit("errors: " + ", ".join(failures) if failures else 0)
