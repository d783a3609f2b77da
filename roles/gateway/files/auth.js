// Managed by localguard (role gateway). API key check for nginx (njs).
// The host holds only sha256(key) per key, with its id, expiry and status: a request's bearer
// token is hashed and looked up; the id of an active, unexpired key is returned for the
// access log and per-key rate limit, an empty string otherwise (nginx answers 401).
import fs from 'fs';
import crypto from 'crypto';

const KEYS_FILE = '/etc/localguard/gateway/api-keys.json';

function keyId(r) {
    const header = r.headersIn.Authorization || '';
    // RFC 9110: the scheme is case-insensitive ("bearer" is as valid as "Bearer").
    const match = header.match(/^Bearer\s+(\S+)$/i);
    if (!match) {
        return '';
    }
    let keys;
    try {
        keys = JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));
    } catch (e) {
        r.error('localguard: cannot read API key hashes: ' + e.message);
        return '';
    }
    const record = keys[crypto.createHash('sha256').update(match[1]).digest('hex')];
    if (!record || record.status !== 'active' || !(Date.parse(record.not_after) > Date.now())) {
        return '';
    }
    return record.id;
}

function forbidden(r) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(403, '{"error":"endpoint not allowed by the gateway"}');
}

export default { keyId, forbidden };
