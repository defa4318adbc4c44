// A contender as a user writes one: a long-lived worker (it has locked something before, as
// workers do, so proper-lockfile knows the filesystem's mtime precision), then waits for FILE's
// lock (retrying every 100 ms) and takes it once proper-lockfile judges it stale (mtime older
// than 2 s): removes the lock directory and makes its own. Prints when it is ready and when it
// got the lock, then releases it and exits.
'use strict';
const lockfile = require('proper-lockfile');
const file = process.argv[2];
const options = {
    realpath: false,
    stale: 2000,
    update: 1000,
    retries: { retries: 600, factor: 1, minTimeout: 100, maxTimeout: 100 },
    onCompromised: () => {},
};
lockfile
    .lock(`${file}-warmup`, options)
    .then((release) => release())
    .then(() => {
        console.log(`ready pid=${process.pid}`);
        return lockfile.lock(file, options);
    })
    .then((release) => {
        console.log(`pid=${process.pid} acquired_unix_ms=${Date.now()}`);
        return release();
    })
    .catch((err) => {
        console.log(`error code=${err.code}`);
        process.exit(1);
    });
