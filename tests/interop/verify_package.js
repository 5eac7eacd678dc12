// Verify an unpacked lmdock learnware package (format v2) with Node.js alone: the RFC 8785 (JCS)
// bytes of manifest.json, their Ed25519 signature, the key id, every file's sha256 and size;
// with a profile file, also the spec profile id. Nothing from lmdock, no npm packages.
//   node verify_package.js PACKAGE_FOLDER [PROFILE_JSON]   prints {"id", "key_id", ...} or fails
//   node verify_package.js --jcs JSON_FILE                 prints the file's JCS encoding
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

// RFC 8785: ECMAScript's own serialization of numbers and strings (JSON.stringify), no
// whitespace, object keys sorted by UTF-16 code units (what Array.prototype.sort compares).
function jcs(value) {
  if (typeof value === "number" && !Number.isFinite(value)) throw new Error(`JCS cannot hold ${value}`);
  if (value === null || ["boolean", "number", "string"].includes(typeof value)) return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(jcs).join(",")}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${jcs(value[k])}`).join(",")}}`;
}

const sha256 = (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");
const readJson = (file) => JSON.parse(fs.readFileSync(file, "utf8"));

function verifyPackage(folder) {
  const manifest = readJson(path.join(folder, "manifest.json"));
  const signature = readJson(path.join(folder, "signature.json"));
  if (manifest.format !== "lmdock-learnware/2") throw new Error(`format ${manifest.format}: not v2`);
  if (signature.algorithm !== "ed25519") throw new Error(`algorithm ${signature.algorithm}`);
  const raw = Buffer.from(signature.public_key, "base64");
  if (raw.length !== 32 || sha256(raw).slice(0, 16) !== signature.key_id) {
    throw new Error("key_id is not the first 16 hex digits of sha256(raw public key)");
  }
  const key = crypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
  const signed = Buffer.from(jcs(manifest), "utf8");
  if (!crypto.verify(null, signed, key, Buffer.from(signature.signature, "base64"))) {
    throw new Error("the signature does not verify: the manifest was altered");
  }
  const listed = new Set(["manifest.json", "signature.json", ...Object.keys(manifest.files)]);
  const extra = fs.readdirSync(folder).filter((name) => !listed.has(name));
  if (extra.length) throw new Error(`files the manifest does not list: ${extra}`);
  for (const [name, entry] of Object.entries(manifest.files)) {
    const bytes = fs.readFileSync(path.join(folder, name));
    if (bytes.length !== entry.size || sha256(bytes) !== entry.sha256) throw new Error(`${name} does not match`);
  }
  return { id: manifest.id, key_id: signature.key_id, spec_profile_id: manifest.spec.profile_id };
}

// The profile id: sha256 of the JCS of every field but profile_id and max_sigma, 16 hex digits.
function profileId(profile) {
  const { profile_id: _id, max_sigma: _policy, ...shaping } = profile;
  return sha256(Buffer.from(jcs(shaping), "utf8")).slice(0, 16);
}

const args = process.argv.slice(2);
try {
  if (args[0] === "--jcs") {
    process.stdout.write(jcs(readJson(args[1])));
  } else {
    const result = verifyPackage(args[0]);
    if (args[1]) result.profile_id = profileId(readJson(args[1]));
    console.log(JSON.stringify(result));
  }
} catch (err) {
  console.error(`not verified: ${err.message}`);
  process.exit(1);
}
