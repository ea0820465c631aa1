//! Seeder and importer tests (in progress).
