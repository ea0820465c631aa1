-- Diagnostics (src/jobs/diagnostics.rs): run counts of probe jobs, so that
-- tests and `stayafrica jobs bench` prove each job ran exactly once.
CREATE TABLE job_tallies (
    tally TEXT NOT NULL,
    member TEXT NOT NULL,
    runs INTEGER NOT NULL,
    pickup_us INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tally, member)
);
-- Tallies used to be rows of periodic_runs named `tally:…`.
DELETE FROM periodic_runs WHERE name LIKE 'tally:%';
