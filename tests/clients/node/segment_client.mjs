// Segment's analytics-node, unchanged: node segment_client.mjs [HOST] [WRITE_KEY]
import { Analytics } from '@segment/analytics-node'

const [host = 'http://127.0.0.1:8080', writeKey = 'wk_default'] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host })
analytics.on('error', (e) => { console.error(e); process.exitCode = 1 })

analytics.identify({
  userId: 'u_ada',
  traits: { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@acme.com', title: 'CTO', plan: 'pro',
            company: { id: 'c_acme', name: 'Acme' } },
})
analytics.track({ userId: 'u_ada', event: 'Signed Up', properties: { plan: 'pro' } })
await analytics.closeAndFlush()
