// Drives the web UI in headless Chromium (Playwright) through a whole
// migration: create, discover, explore (treemap, search), approve the
// plan shown, copy, verify, logs; then a phone's width, labels, and the
// token prompt. Run by tests/web_ui.rs, which checks the outcome against
// the API and rsync. Arguments: a JSON document (see web_ui.rs).
// Prints one JSON line: what it saw.

const args = JSON.parse(process.argv[2]);
const { chromium } = require(args.playwright);

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: args.chromium,
    // As root, no sandbox; no background connections on a closed network.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const seen = {};
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  try {
    page.setDefaultTimeout(60000);
    const problems = [];
    page.on("pageerror", (e) => problems.push(String(e)));
    page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
    const url = args.url;
    // Loads a page afresh and waits until it is drawn (the page marks
    // its main part busy while it draws).
    const show = async (hash) => {
      await page.goto(`${url}/${hash}`);
      await page.reload();
      await page.waitForSelector('main[aria-busy="false"]');
    };

    // Create.
    await page.goto(`${url}/`);
    await page.getByRole("heading", { name: "Migrations" }).waitFor();
    await page.getByLabel("Name", { exact: true }).fill(args.name);
    await page.getByLabel("Source", { exact: true }).fill(args.src);
    await page.getByLabel("Destination", { exact: true }).fill(args.dst);
    await page.getByLabel("Exclude").fill("*.skip");
    await page.getByRole("button", { name: "Create" }).click();
    await page.waitForURL(`**/#/m/${args.name}/overview`);

    // Discover, followed live to its end.
    await page.getByRole("button", { name: "Discover", exact: true }).click();
    await page.getByText("discover: done").waitFor();
    seen.discovered_badge = await page.locator("h1 .badge").first().textContent();
    check(seen.discovered_badge === "discovered", `phase badge ${seen.discovered_badge}`);
    await page.screenshot({ path: `${args.shots}/overview.png`, fullPage: true });

    // Explore: the treemap has a cell a folder; Enter on it opens it.
    await page.getByRole("link", { name: "Explore" }).click();
    const cells = page.locator("svg.treemap g[role=link]");
    await cells.first().waitFor();
    seen.treemap_folders = await cells.count();
    await page.screenshot({ path: `${args.shots}/explore.png`, fullPage: true });
    await cells.first().focus();
    await page.keyboard.press("Enter");
    await page.waitForURL(/explore\?path=/);
    seen.opened = decodeURIComponent(new URL(page.url()).hash.split("path=")[1]);
    await page.getByRole("navigation", { name: "Folder" }).getByText(seen.opened.split("/").pop()).waitFor();
    // Search under the root for a name.
    await page.getByRole("navigation", { name: "Folder" }).getByRole("link", { name: "(root)" }).click();
    await page.waitForFunction(() =>
      document.querySelectorAll("nav.crumbs a").length === 1 && document.querySelector("main").getAttribute("aria-busy") === "false");
    await page.getByLabel("Name contains").fill(args.search);
    await page.getByRole("button", { name: "Filter" }).click();
    // The heading comes before the rows, which come with the page's answer.
    const matches = page.locator("table", { has: page.locator("caption", { hasText: "Matching items" }) });
    await matches.locator("tbody tr").first().waitFor();
    seen.search_rows = await matches.locator("tbody tr").count();
    seen.search_paths = await matches.locator("tbody tr td.path").allTextContents();

    // Approve exactly the plan shown.
    await page.getByRole("link", { name: "Approve" }).click();
    const hash = page.locator("[data-plan-hash]");
    await hash.waitFor();
    seen.plan_hash = await hash.textContent();
    seen.plan_files = await page.locator(".card", { hasText: "Files to copy" }).locator(".v").textContent();
    await page.screenshot({ path: `${args.shots}/approve.png`, fullPage: true });
    await page.getByLabel("Approved by").fill("web-test");
    await page.getByRole("button", { name: "Approve this plan" }).click();
    await page.waitForURL(`**/#/m/${args.name}/copy`);

    // Copy, then verify with content compared.
    await page.getByRole("button", { name: "Copy", exact: true }).click();
    await page.getByText("copy: done").waitFor();
    await page.getByLabel("compare content").check();
    await page.getByRole("button", { name: "Verify" }).click();
    await page.getByText("verify: done").waitFor();
    seen.mismatch = await page.locator(".card", { hasText: "Mismatch" }).locator(".v").textContent();
    seen.failures = await page.getByText("No failures.").count();
    await page.screenshot({ path: `${args.shots}/copy.png`, fullPage: true });

    // Logs: the approval is there.
    await page.getByRole("link", { name: "Logs" }).click();
    // The lifecycle's own record of the approval, and the engine's.
    await page.getByText(/^plan approved by=web-test /).first().waitFor();
    await page.getByText(/^round sealed /).first().waitFor();

    // Every control has a label; every button a name.
    for (const hashPath of ["#/", `#/m/${args.name}/explore`, `#/m/${args.name}/approve`, `#/m/${args.name}/copy`]) {
      await show(hashPath);
      const unlabelled = await page.evaluate(() =>
        [...document.querySelectorAll("input, select, textarea")].filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id || e.outerHTML),
      );
      check(unlabelled.length === 0, `unlabelled controls on ${hashPath}: ${unlabelled}`);
      const unnamed = await page.evaluate(() => [...document.querySelectorAll("button")].filter((b) => !b.textContent.trim()).length);
      check(unnamed === 0, `buttons without a name on ${hashPath}`);
    }

    // A phone's width: nothing wider than the screen but tables, which scroll.
    await page.setViewportSize({ width: 390, height: 844 });
    for (const hashPath of ["#/", `#/m/${args.name}/overview`, `#/m/${args.name}/explore`, `#/m/${args.name}/approve`]) {
      await show(hashPath);
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      check(width <= 390, `page wider than a phone on ${hashPath}: ${width}`);
    }
    await page.screenshot({ path: `${args.shots}/phone.png`, fullPage: true });
    check(problems.length === 0, `errors in the page: ${problems.join("; ")}`);

    // A server with a token: the page asks for it, then works.
    if (args.token_url) {
      const other = await browser.newPage();
      await other.goto(`${args.token_url}/`);
      await other.getByRole("heading", { name: "This server needs its token" }).waitFor();
      await other.getByLabel("Token").fill("wrong");
      await other.getByRole("button", { name: "Use it" }).click();
      await other.waitForSelector('main[aria-busy="false"]');
      await other.getByRole("heading", { name: "This server needs its token" }).waitFor();
      await other.getByLabel("Token").fill(args.token);
      await other.getByRole("button", { name: "Use it" }).click();
      await other.getByRole("heading", { name: "Migrations" }).waitFor();
      seen.token_ok = true;
    }
  } catch (e) {
    // What the page showed when it went wrong.
    const shown = await page.locator("main").innerText().catch(() => "(no page)");
    throw new Error(`${e.message}\n--- the page at ${page.url()} showed:\n${shown}`);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
