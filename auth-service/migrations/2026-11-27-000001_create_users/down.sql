DROP TABLE auth.users;
