DROP TABLE reports.data_keys;
