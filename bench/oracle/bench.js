#!/usr/bin/env node
// The reference product's engine (Segment's npm packages) timed in-process on the events read
// from standard input: the subscription `type = "identify"` and the Close action's default
// mapping, as in `cargo xtask bench engine`. Prints {"events_per_sec": N}.
'use strict'
const readline = require('readline')
const { parseFql, validate } = require('@segment/destination-subscriptions')
const { transform } = require('@segment/actions-core')

const mapping = {
  lead_name: { '@path': '$.traits.company.name' },
  lead_external_id: { '@path': '$.traits.company.id' },
  contact_name: { '@path': '$.traits.name' },
  contact_email: { '@path': '$.traits.email' },
  contact_phone: { '@path': '$.traits.phone' },
  contact_url: { '@path': '$.traits.website' },
  contact_title: { '@path': '$.traits.title' },
  contact_external_id: { '@path': '$.userId' }
}

async function main() {
  const rounds = Number(process.argv[2] || 10)
  const events = []
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
  for await (const line of rl) if (line.trim()) events.push(JSON.parse(line))
  const ast = parseFql('type = "identify"')
  let sink = 0
  const start = process.hrtime.bigint()
  for (let r = 0; r < rounds; r++) {
    for (const e of events) {
      if (validate(ast, e)) sink += Object.keys(transform(mapping, e)).length
    }
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9
  process.stdout.write(JSON.stringify({ events_per_sec: (events.length * rounds) / secs, sink }) + '\n')
}
main()
