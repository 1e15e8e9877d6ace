-- Migration 2: loans are returned; a loan cannot end before it starts.
ALTER TABLE loans ADD COLUMN returned_on date;
ALTER TABLE loans ADD CONSTRAINT loans_return_after_loan CHECK (returned_on IS NULL OR returned_on >= loaned_on);
