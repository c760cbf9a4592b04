/**
 * The API reference page (/swagger) in a real browser, offline: the built single executable
 * and headless Chromium run together in a fresh network namespace that has nothing but
 * loopback, so the page can only work from what the executable carries. Auth is on: the page
 * and its document must not need a token.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stringify } from "yaml";

const repo = resolve(import.meta.dir, "../..");
const dir = mkdtempSync(join(tmpdir(), "rcloud-refpage-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function need(cmd: string, pkg: string): void {
  if (Bun.spawnSync(["sh", "-c", `command -v ${cmd}`]).exitCode !== 0) throw new Error(`${cmd} is missing: apt-get install ${pkg} (scripts/lib/install-deps.sh)`);
}

// Inside the namespace: loopback up, rcloud started, Chromium loads the page; rcloud stopped by its PID.
const NETNS_SCRIPT = `set -eu
ip link set lo up
"$RCLOUD" serve --config "$DIR/rcloud.yaml" > "$DIR/rcloud.log" 2>&1 & pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for i in $(seq 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 $pid || { echo "rcloud exited" >&2; exit 1; }
  sleep 0.1
done
chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$DIR/profile" \\
  --log-net-log="$DIR/net.json" --virtual-time-budget=20000 \\
  --dump-dom "http://127.0.0.1:$PORT/swagger" > "$DIR/dom.html" 2> "$DIR/chromium.log"
`;

test("shows the API's routes with no network but loopback, from the single executable", async () => {
  for (const [cmd, pkg] of [["chromium", "chromium"], ["unshare", "util-linux"], ["ip", "iproute2"]] as const) need(cmd, pkg);
  const exe = join(dir, "rcloud");
  const build = Bun.spawnSync([join(repo, "scripts/build.sh"), "--outfile", exe], { stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`scripts/build.sh failed: ${build.stderr.toString()}`);

  const port = 18765; // the namespace is private: no other listener
  writeFileSync(
    join(dir, "rcloud.yaml"),
    stringify({
      logging: { level: "info", format: "text" },
      server: { bind_address: `127.0.0.1:${port}` },
      driver: "libvirt",
      libvirt: { uri: "test+unix:///default?socket=/nonexistent/rcloud-refpage.sock" }, // the page needs no hypervisor
      auth: { enabled: true, tokens_file: join(dir, "tokens.json") },
    }),
  );
  const run = Bun.spawn(["unshare", "-n", "bash", "-c", NETNS_SCRIPT], {
    env: { ...process.env, RCLOUD: exe, DIR: dir, PORT: String(port) },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [code, err] = await Promise.all([run.exited, new Response(run.stderr).text()]);
  if (code !== 0) throw new Error(`netns run failed (${code}): ${err}\n${readFileSync(join(dir, "rcloud.log"), "utf8")}`);

  const dom = readFileSync(join(dir, "dom.html"), "utf8");
  // Swagger UI rendered the document: one block per route, with the title.
  for (const path of ["/api/v1/vms", "/api/v1/vms/{id}/stop", "/api/v1/images", "/api/v1/health"]) expect(dom).toContain(`data-path="${path}"`);
  expect(dom).toContain("rcloud API");

  // Every request the page made went to rcloud (Chromium's own background requests have no page initiator).
  const origin = `http://127.0.0.1:${port}`;
  const events = (JSON.parse(readFileSync(join(dir, "net.json"), "utf8")) as { events: { params?: { url?: string; initiator?: string } }[] }).events;
  const fromPage = events.map((e) => e.params).filter((p) => p?.initiator === origin && typeof p.url === "string").map((p) => p?.url as string);
  expect(fromPage).toEqual(expect.arrayContaining([`${origin}/swagger/swagger-ui-bundle.js`, `${origin}/swagger/swagger-ui.css`, `${origin}/swagger/json`]));
  expect(fromPage.filter((u) => !u.startsWith(`${origin}/`))).toEqual([]);
}, 180_000);
