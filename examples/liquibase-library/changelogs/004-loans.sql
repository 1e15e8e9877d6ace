--liquibase formatted sql

--changeset grace:create-loan
CREATE TABLE loan (
    id serial PRIMARY KEY,
    isbn varchar(13) NOT NULL REFERENCES book (isbn),
    member_id int NOT NULL REFERENCES member (id),
    due date NOT NULL
);
--rollback DROP TABLE loan;

--changeset grace:loan-due-check
--preconditions onFail:CONTINUE
--precondition-sql-check expectedResult:0 SELECT count(*) FROM loan
ALTER TABLE loan ADD CONSTRAINT loan_due_after_2000 CHECK (due > DATE '2000-01-01');
