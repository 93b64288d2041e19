// Segment's analytics-node, unchanged, pointed at a closeflow server: `node send.mjs HOST WRITE_KEY`.
import { Analytics } from '@segment/analytics-node'

const [host, writeKey] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, flushInterval: 200, maxRetries: 3 })
analytics.on('error', (e) => { console.error('analytics-node error:', e); process.exitCode = 1 })

analytics.identify({
  userId: 'u_node_1',
  traits: { email: 'grace@globex.com', name: 'Grace Hopper', title: 'Admiral', company: { id: 'c_globex', name: 'Globex' } },
})
analytics.group({ userId: 'u_node_1', groupId: 'c_globex', traits: { name: 'Globex', plan: 'pro' } })
analytics.track({ userId: 'u_node_1', event: 'Signed Up', properties: { plan: 'pro' } })
await analytics.closeAndFlush({ timeout: 20000 })
