#!/usr/bin/env node
// The web UI in a real browser: Debian's Chromium (/usr/bin/chromium, or
// $CHROMIUM) driven headless by playwright-core; no browser is downloaded.
// Run by tests/ui_browser.rs, which starts the OIDC provider, the gateway with
// its archive, approvals and UI, and the traffic; this script then:
//
//   - logs in as alice (auditor) through the real provider;
//   - sees the running session on the sessions list (live updates);
//   - searches sessions by table, opens one, steps through the replay
//     (step, back, play, pause), opens the table history and a diff;
//   - sees the failed statement's error message on its row, and the result
//     the client saw in the player;
//   - on the diff, B's statement under "Session B" (not A's);
//   - runs a SQL query over the archive (columns in SELECT order); is refused
//     the approvals inbox;
//     logs out;
//   - logs in as bob (approver) and approves the held statement from the inbox
//     (the waiting client then gets its result; the Rust test checks it).
//
// Recorded `<script>` / `onerror` values never run: a dialog or a set
// `window.__xss` fails the run. A screenshot of each page goes to `artifacts`.
//
//   node ui-browser.mjs '{"ui": "http://127.0.0.1:PORT", "artifacts": "/tmp/x",
//                         "a": "<session id>", "b": "<session id>", "held": "<sql>"}'

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { check, launchChromium } from './browser.mjs';

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.artifacts, { recursive: true });

const browser = await launchChromium();
const done = [];
try {
  const alice = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  const page = await alice.newPage();
  const shot = async (p, name) => {
    await p.screenshot({ path: join(cfg.artifacts, `${name}.png`), fullPage: true });
    done.push(name);
  };
  const noScriptRan = async (p, where) => {
    check((await p.evaluate(() => window.__xss)) === undefined, `no recorded script ran (${where})`);
  };
  const dialogs = [];
  alice.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });

  // --- Log in as alice through the provider -------------------------------
  await page.goto(`${cfg.ui}/`);
  check(page.url().startsWith(`${cfg.ui}/login?next=`), `pages redirect to the login (${page.url()})`);
  await page.goto(`${cfg.ui}/login?next=%2F&login_hint=alice`);
  await shot(page, 'login');
  await Promise.all([page.waitForURL(`${cfg.ui}/`), page.click('#sign-in')]);
  check((await page.textContent('#who')) === 'Alice Auditor', 'alice is logged in');
  check((await page.locator('header a[href="/inbox"]').count()) === 0, 'no inbox link for an auditor');

  // --- Sessions list: live running sessions -------------------------------
  await page.waitForFunction(
    () => document.querySelector('#running tbody')?.textContent.includes('migrator'),
    null,
    { timeout: 30000 },
  );
  await shot(page, 'sessions');

  // --- Search for a table, open a session ----------------------------------
  await page.fill('input[name=table]', 'orders');
  await Promise.all([page.waitForURL(/table=orders/), page.click('form[action="/"] button')]);
  const found = await page.locator('main .scroll > table tbody tr').count();
  check(found >= 2, `search by table finds both sessions (${found})`);
  await shot(page, 'search-by-table');
  await Promise.all([
    page.waitForURL(`${cfg.ui}/sessions/${cfg.a}`),
    page.click(`main .scroll > table a:text-is("${cfg.a}")`),
  ]);

  // --- Replay: step, back, play, pause ------------------------------------
  const rows = await page.locator('#timeline tbody tr').count();
  check(rows >= 5, `the timeline has the session's statements (${rows})`);
  const pos = () => page.textContent('#pos');
  await page.click('#next');
  await page.click('#next');
  check((await pos()) === `statement 2 of ${rows}`, `step twice: ${await pos()}`);
  await page.click('#prev');
  check((await pos()) === `statement 1 of ${rows}`, `step back: ${await pos()}`);
  check((await page.locator('#timeline tr.current').count()) === 1, 'one current statement');
  await page.selectOption('#speed', '10');
  await page.click('#play');
  await page.waitForFunction((n) => document.getElementById('pos').textContent === `statement ${n} of ${n}`, rows);
  await page.selectOption('#speed', '2000');
  await page.click('#prev');
  await page.click('#play');
  await page.click('#pause');
  const paused = await pos();
  await page.waitForTimeout(2500);
  check((await pos()) === paused, `pause holds the position (${paused})`);
  const timeline = await page.textContent('#timeline');
  check(timeline.includes("<script>window.__xss=3</script>"), 'recorded SQL text is shown as text');
  check((await page.locator('#timeline script, #timeline img').count()) === 0, 'no markup from the record');
  await noScriptRan(page, 'session');
  // The player shows what the client saw: the first statement's result set.
  await page.locator('#timeline tbody tr').first().click();
  await page.waitForFunction(() => document.querySelector('#result table') !== null, null, { timeout: 15000 });
  check((await page.textContent('#result table')).includes('first'), 'the result the client saw (order 1, note "first")');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, 'session-replay');

  // --- B's failed statement says why ---------------------------------------
  await page.goto(`${cfg.ui}/sessions/${cfg.b}`);
  const failed = page.locator('#timeline tr.error');
  check((await failed.count()) === 1, `one failed statement in B (${await failed.count()})`);
  const why = await failed.locator('td.c-error_message').textContent();
  check(why.includes('no_such_table') && (await failed.locator('td.c-error_code').textContent()) === '1146',
    `the failed row says why: ${why}`);
  await failed.click();
  await page.waitForFunction(() => document.querySelector('#result p.error')?.textContent.includes('1146'));

  // --- Table history, diff -------------------------------------------------
  await page.goto(`${cfg.ui}/tables?name=orders`);
  check((await page.locator('main .scroll > table tbody tr').count()) >= 2, 'table history has rows');
  const history = await page.locator('main th').allTextContents();
  check(history.includes('sql') && history.includes('rows_affected'), `table history has SQL and rows: ${history}`);
  check((await page.textContent('main .scroll > table')).includes("SET status = 'cancelled'"), 'the SQL text is in the history');
  await shot(page, 'table-history');
  await page.goto(`${cfg.ui}/diff`);
  await page.fill('input[name=a]', cfg.a);
  await page.fill('input[name=b]', cfg.b);
  await Promise.all([page.waitForURL(/\/diff\?a=/), page.click('form[action="/diff"] button')]);
  const summary = await page.textContent('main > p');
  check(/\d+ same/.test(summary) && /[1-9]\d* changed|[1-9]\d* only in/.test(summary), `the diff finds differences: ${summary}`);
  const changed = page.locator('#diff tr.changed', { hasText: 'UPDATE' });
  check((await changed.count()) === 1, 'the two UPDATEs are aligned as changed');
  const sideA = await changed.locator('td.side-a').textContent();
  const sideB = await changed.locator('td.side-b').textContent();
  check(sideA.includes("'shipped'") && sideB.includes("'cancelled'"), `A's SQL under A, B's under B: ${sideA} | ${sideB}`);
  await noScriptRan(page, 'diff');
  await shot(page, 'diff');

  // --- SQL console ---------------------------------------------------------
  await page.goto(`${cfg.ui}/sql`);
  await page.click('#example-2');
  check((await page.inputValue('#sql')).includes('failures'), 'an example query fills the editor');
  await page.fill('#sql', "SELECT subject, command_index, sql FROM statements WHERE sql LIKE '%<script>%' OR sql LIKE '%onerror%' ORDER BY subject, command_index");
  await Promise.all([page.waitForURL(`${cfg.ui}/sql`), page.click('form[action="/sql"] button')]);
  const columns = await page.locator('main .scroll > table th').allTextContents();
  check(JSON.stringify(columns) === JSON.stringify(['subject', 'command_index', 'sql']), `SELECT order: ${columns}`);
  const result = await page.textContent('main .scroll > table');
  check(result.includes('<script>window.__xss=3</script>'), 'the query result shows recorded markup as text');
  check((await page.locator('main table script, main table img').count()) === 0, 'no markup from the result');
  await noScriptRan(page, 'sql');
  await shot(page, 'sql');

  // --- An auditor cannot open the inbox; logout ends the session -----------
  const refused = await page.goto(`${cfg.ui}/inbox`);
  check(refused.status() === 403, `auditor refused the inbox (${refused.status()})`);
  await page.goto(`${cfg.ui}/`);
  await Promise.all([page.waitForURL(/\/login/), page.click('#logout')]);
  await page.goto(`${cfg.ui}/sql`);
  check(page.url().startsWith(`${cfg.ui}/login?next=`), 'logged out');
  check(dialogs.length === 0, `no dialogs: ${dialogs}`);
  await alice.close();

  // --- bob approves the held statement from the inbox ----------------------
  const bob = await browser.newContext({ viewport: { width: 1360, height: 860 } });
  bob.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  const inbox = await bob.newPage();
  await inbox.goto(`${cfg.ui}/login?next=%2Finbox&login_hint=bob`);
  await Promise.all([inbox.waitForURL(`${cfg.ui}/inbox`), inbox.click('#sign-in')]);
  check((await inbox.textContent('#who')) === 'Bob Approver', 'bob is logged in');
  const card = inbox.locator('.request', { hasText: cfg.held });
  await card.waitFor({ timeout: 30000 });
  const text = await card.textContent();
  check(text.includes('migrations / ddl'), `the card names the rule: ${text}`);
  check(text.includes('0 of 1 approval'), `the card shows the progress: ${text}`);
  check(text.includes('EXPLAIN estimate'), 'the card shows the estimate');
  check((await card.locator('pre.sql img').count()) === 0, 'the held SQL is escaped');
  await noScriptRan(inbox, 'inbox');
  await shot(inbox, 'inbox');
  await card.locator('input[name=note]').fill('planned change, checked by bob');
  await Promise.all([inbox.waitForURL(/\/inbox\?decided=/), card.locator('button.approve').click()]);
  const notice = await inbox.textContent('#decided');
  check(/is now (approved|used)/.test(notice), `approved: ${notice}`);
  await noScriptRan(inbox, 'inbox after the decision');
  await shot(inbox, 'inbox-decided');
  check(dialogs.length === 0, `no dialogs: ${dialogs}`);
  await bob.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok: true, screenshots: done }));
