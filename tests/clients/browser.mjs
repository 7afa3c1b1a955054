// What the browser tests share: Debian's Chromium (/usr/bin/chromium, or
// $CHROMIUM) driven headless by playwright-core (no browser is downloaded),
// and a check that fails the run with what was expected.

import { chromium } from 'playwright-core';

export function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}
