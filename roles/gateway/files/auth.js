// Managed by localguard (role gateway). API key check for nginx (njs 0.7.9).
// The host holds only sha256(key): one file per usable key in by-hash/, named by the hash and
// written by localguard-keys (static keys from inventory plus the registry's signed list). A
// request's bearer token is hashed and that one file read, so the check costs the same with 3
// keys or 10,000, and a key added or removed there counts from the next request, without a
// reload of nginx.
import fs from 'fs';
import crypto from 'crypto';

// Kept in $lg_key_record when the request carries no usable key.
const NONE = '-';

// njs 0.7.9 runs every request in a fresh VM, so nothing JavaScript keeps lasts beyond one call
// chain. The lookup is kept in $lg_key_record (js_var) instead: nginx keeps a request's variables
// for the whole request and shares them with its auth_request subrequest, so $lg_key_id, the rate
// tier and the auth decision all come from one file read.
function lookup(r) {
    const cached = r.variables.lg_key_record;
    if (cached) {
        return cached === NONE ? null : JSON.parse(cached);
    }
    const record = read(r);
    r.variables.lg_key_record = record ? JSON.stringify(record) : NONE;
    return record;
}

function read(r) {
    const header = r.headersIn.Authorization || '';
    // RFC 9110: the scheme is case-insensitive ("bearer" is as valid as "Bearer").
    const match = header.match(/^Bearer\s+(\S+)$/i);
    if (!match) {
        return null;
    }
    // A hex digest is the whole file name: nothing the caller sends reaches the path itself.
    const path = r.variables.lg_keys_dir + '/' + crypto.createHash('sha256').update(match[1]).digest('hex');
    let record;
    try {
        record = JSON.parse(fs.readFileSync(path, 'utf8'));
    } catch (e) {
        if (e.code !== 'ENOENT') {
            r.error('localguard: cannot read API key record ' + path + ': ' + e.message);
        }
        return null;
    }
    if (!wellFormed(record)) {
        r.error('localguard: malformed API key record ' + path);
        return null;
    }
    if ((record.status !== 'active' && record.status !== 'retiring')
        || !(Date.parse(record.not_after) > Date.now())) {
        return null;
    }
    record.tier = tier(r, record);
    return record;
}

function wellFormed(record) {
    return record !== null && typeof record === 'object' && typeof record.id === 'string'
        && record.id !== '' && typeof record.status === 'string' && typeof record.not_after === 'string'
        && Array.isArray(record.scopes) && Array.isArray(record.engines) && typeof record.rate === 'string';
}

// The rate tier this key is limited by: its own when the gateway has a zone for it, else the
// default per-key zone ('') — a key must never go unlimited because its tier is unknown here.
function tier(r, record) {
    if (record.rate === '') {
        return '';
    }
    const known = (r.variables.lg_rate_tiers || '').split(' ');
    if (known.indexOf(record.rate) >= 0) {
        return record.rate;
    }
    // Once per request: the lookup above runs once per request.
    r.warn('localguard: API key ' + record.id + ' has rate tier "' + record.rate
        + '", unknown to this gateway (gateway_rate_tiers); limited at the default per-key rate');
    return '';
}

// $lg_key_id: the key's id for the access log and the rate limits; '' without a usable key.
function keyId(r) {
    const record = lookup(r);
    return record ? record.id : '';
}

// $lg_key_tier: the rate tier of a usable key ('' = the default per-key rate). The per-tier rate
// keys are nginx maps of it: the key id in its tier's zone, '' (not counted) in every other.
function keyTier(r) {
    const record = lookup(r);
    return record ? record.tier : '';
}

// The auth_request subrequest: 204 lets the request through, 401 for no usable key, 403 for a
// usable key outside its scopes ($lg_scope, the route's class, set by its location) or engines
// ($lg_engine, this gateway's engine). A location without a class is refused to scoped keys.
function auth(r) {
    const record = lookup(r);
    if (!record) {
        r.return(401);
        return;
    }
    const scope = r.variables.lg_scope || '';
    const engine = r.variables.lg_engine || '';
    if ((record.scopes.length > 0 && record.scopes.indexOf(scope) < 0)
        || (record.engines.length > 0 && record.engines.indexOf(engine) < 0)) {
        r.return(403);
        return;
    }
    r.return(204);
}

function forbidden(r) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(403, '{"error":"endpoint not allowed by the gateway"}');
}

export default { keyId, keyTier, auth, forbidden };
