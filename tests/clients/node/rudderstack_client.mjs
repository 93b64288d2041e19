// RudderStack's rudder-sdk-node, unchanged: node rudderstack_client.mjs [HOST] [WRITE_KEY] [nogzip]
import Analytics from '@rudderstack/rudder-sdk-node'

const [host = 'http://127.0.0.1:8080', writeKey = 'wk_default', gzip] = process.argv.slice(2)
const client = new Analytics(writeKey, {
  dataPlaneUrl: host, // it posts to HOST/v1/batch
  gzip: gzip !== 'nogzip', // on by default
  errorHandler: (e) => { console.error(e); process.exitCode = 1 },
})

client.identify({
  userId: 'u_ada',
  traits: { first_name: 'Ada', last_name: 'Lovelace', email: 'ada@acme.com', title: 'CTO', plan: 'pro',
            company: { id: 'c_acme', name: 'Acme' } },
})
client.track({ userId: 'u_ada', event: 'Signed Up', properties: { plan: 'pro' } })
await client.flush()
