#!/usr/bin/env node
// The web UI served by `chaperone ui --archive` (no gateway, loopback, no
// login), in Debian's Chromium driven by playwright-core. Run by
// tests/ui_archive.rs over the demo's archive copied away; this script checks:
//
//   - the session page shows the agent's claims, and not the date/hour
//     partition columns;
//   - a failed statement's row says why (its error message is visible);
//   - the player shows the result the client saw for a read;
//   - the SQL console shows columns in SELECT order, with a JSON function.
//
//   node ui-archive.mjs '{"ui": "http://127.0.0.1:PORT", "artifacts": "/tmp/x", "session": "<id>"}'

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { check, launchChromium } from './browser.mjs';

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.artifacts, { recursive: true });

const browser = await launchChromium();
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  const page = await context.newPage();
  const shot = (name) => page.screenshot({ path: join(cfg.artifacts, `${name}.png`), fullPage: true });

  // --- The session page: claims, no partition columns ----------------------
  await page.goto(`${cfg.ui}/sessions/${cfg.session}`);
  const claims = await page.textContent('#claims');
  check(claims.includes('"repository": "acme/shop"'), `claims shown: ${claims}`);
  const facts = await page.locator('#identity dt').allTextContents();
  check(!facts.includes('date') && !facts.includes('hour'), `no partition columns: ${facts}`);
  check(facts.includes('role') && facts.includes('client_program'), `identity facts: ${facts}`);

  // --- The failed statement says why ---------------------------------------
  const failed = page.locator('#timeline tr.error');
  check((await failed.count()) >= 1, 'a failed statement is marked');
  const message = await failed.first().locator('td.c-error_message').textContent();
  check(message.includes('customer_archive'), `its error message is visible: ${message}`);
  check(await failed.first().locator('td.c-error_message').isVisible(), 'the message cell is on screen');
  const headers = await page.locator('#timeline th').allTextContents();
  check(headers.indexOf('started_at') < headers.indexOf('sql') && headers.indexOf('sql') < headers.indexOf('error_message'),
    `timeline columns in order (time, what, result): ${headers}`);

  // --- The player shows what the client saw --------------------------------
  const rows = page.locator('#timeline tbody tr');
  const n = await rows.count();
  let shown = false;
  for (let i = 0; i < n && !shown; i++) {
    const returned = await rows.nth(i).locator('td.c-rows_returned').textContent();
    if (+returned > 0) {
      await rows.nth(i).click();
      await page.waitForFunction(() => document.querySelector('#result table') !== null, null, { timeout: 15000 });
      shown = true;
    }
  }
  check(shown, 'a read statement shows its result table');
  await failed.first().click();
  await page.waitForFunction(() => document.querySelector('#result p.error')?.textContent.includes('customer_archive'));
  await failed.first().scrollIntoViewIfNeeded();
  await shot('session-claims');

  // --- SQL console: SELECT order, JSON functions ---------------------------
  await page.goto(`${cfg.ui}/sql`);
  await page.fill('#sql', "SELECT subject, json_get_str(claims, 'repository') AS repository, time AS started FROM sessions WHERE event = 'start' ORDER BY time");
  await Promise.all([page.waitForURL(`${cfg.ui}/sql`), page.click('form[action="/sql"] button')]);
  const order = await page.locator('main table th').allTextContents();
  check(JSON.stringify(order) === JSON.stringify(['subject', 'repository', 'started']), `SELECT order: ${order}`);
  check((await page.textContent('main table tbody')).includes('acme/shop'), 'json_get_str reads a claim');
  await shot('sql-json');
  await page.fill('#sql', 'SELECT no_such_function(1)');
  await Promise.all([page.waitForURL(`${cfg.ui}/sql`), page.click('form[action="/sql"] button')]);
  const error = await page.textContent('main p.error');
  check(error.includes('unknown function') && !error.includes('refused'), `an unknown function is said as such: ${error}`);
  await context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: true }));
