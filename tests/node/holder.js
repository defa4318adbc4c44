// A lock holder as a user writes one: proper-lockfile's mkdir lock (`FILE.lock`), refreshed
// with utimes every second, stale after 2 s. Prints its pid once it holds the lock, and each
// compromise proper-lockfile reports; runs until killed.
'use strict';
const lockfile = require('proper-lockfile');
const file = process.argv[2];
lockfile
    .lock(file, {
        realpath: false,
        stale: 2000,
        update: 1000,
        onCompromised: (err) => console.log(`compromised code=${err.code}`),
    })
    .then(() => {
        console.log(`pid=${process.pid} locked_unix_ms=${Date.now()}`);
        setInterval(() => {}, 1000);
    })
    .catch((err) => {
        console.log(`error code=${err.code}`);
        process.exit(1);
    });
