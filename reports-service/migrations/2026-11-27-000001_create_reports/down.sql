DROP TABLE reports.reports;
