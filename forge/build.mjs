// Builds the Forge resources: forge/src/<resource>/ → forge/static/<resource>/, the folders
// that manifest.yml's `resources` point at. Each entry script is bundled with the real
// @forge/bridge (and ../shared/) into one ES module of the same name, so index.html's
// `<script type="module" src="./panel.js">` loads the bundle unchanged; index.html and the
// stylesheets are copied beside it. Run with `npm run build` before `forge deploy`.
import { build } from "esbuild";
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const source = path.join(here, "src");
const output = path.join(here, "static");

// resource folder → its entry script (manifest.yml: resources panel, background).
const resources = {
  panel: "panel.js",
  background: "background.js",
};

// <script …src="…"…> and <link rel="stylesheet" href="…">: what index.html loads.
const SCRIPT = /<script\b([^>]*)>([\s\S]*?)<\/script>/gi;
const STYLESHEET = /<link\b[^>]*\brel=["']?stylesheet["']?[^>]*>/gi;
const attribute = (tag, name) => {
  const match = tag.match(new RegExp(`\\b${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)'|([^\\s>]+))`, "i"));
  return match ? (match[1] ?? match[2] ?? match[3]) : null;
};

function fail(message) {
  console.error(`build: ${message}`);
  process.exit(1);
}

/** A URL in index.html that Forge can serve: relative, inside the resource folder. */
function localFile(resource, url) {
  if (!url || /^[a-z][a-z0-9+.-]*:/i.test(url) || url.startsWith("/") || url.startsWith("//")) {
    fail(`${resource}/index.html loads ${url}: only relative URLs work in a Forge resource`);
  }
  const file = path.posix.normalize(url.split(/[?#]/)[0]);
  if (file.startsWith("../")) {
    fail(`${resource}/index.html loads ${url}, outside its folder`);
  }
  return file;
}

/** Checks index.html and rewrites its entry script tag for the bundle (same name, an ES module). */
function pageFor(resource, html, entry) {
  const scripts = [...html.matchAll(SCRIPT)];
  const entries = scripts.filter((match) => attribute(match[1], "src") !== null);
  for (const match of scripts) {
    const src = attribute(match[1], "src");
    if (src === null && match[2].trim() !== "" && !/type=["']?importmap/i.test(match[1])) {
      fail(`${resource}/index.html has an inline script: Forge's CSP refuses it`);
    }
    if (src === null && /type=["']?importmap/i.test(match[1])) {
      fail(`${resource}/index.html has an import map: the bundle resolves @forge/bridge itself`);
    }
  }
  if (entries.length !== 1 || localFile(resource, attribute(entries[0][1], "src")) !== entry) {
    fail(`${resource}/index.html must load exactly one script, ./${entry}`);
  }
  const [tag] = entries[0];
  return html.replace(tag, `<script type="module" src="./${entry}"></script>`);
}

await rm(output, { recursive: true, force: true });

for (const [resource, entry] of Object.entries(resources)) {
  const from = path.join(source, resource);
  const to = path.join(output, resource);
  await mkdir(to, { recursive: true });

  const html = await readFile(path.join(from, "index.html"), "utf8");
  await writeFile(path.join(to, "index.html"), pageFor(resource, html, entry));

  await build({
    entryPoints: [path.join(from, entry)],
    outfile: path.join(to, entry),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2020"],
    minify: false,
    sourcemap: false,
    legalComments: "eof",
    logLevel: "warning",
  });

  // Stylesheets the page links, and any other .css in the folder.
  const linked = [...html.matchAll(STYLESHEET)].map(([tag]) => localFile(resource, attribute(tag, "href")));
  const present = (await readdir(from)).filter((name) => name.endsWith(".css"));
  for (const sheet of new Set([...linked, ...present])) {
    if (!present.includes(sheet)) {
      fail(`${resource}/index.html links ${sheet}, which is not in src/${resource}/`);
    }
    await copyFile(path.join(from, sheet), path.join(to, sheet));
  }
  console.log(`build: static/${resource}/ ← index.html, ${entry}${present.length ? ", " + present.join(", ") : ""}`);
}
