// PgjdbcStale runs pgjdbc with prepareThreshold=1 (every PreparedStatement is
// a named server statement from its first execution on) across a schema
// change, and prints each step's outcome as the Python scripts do (see
// drvscen.py): STEP <name> ok <rows> | STEP <name> error <class> <SQLSTATE>,
// NOTE lines with the messages, DONE at the end.
//
// Usage: java PgjdbcStale <scenario> <jdbc-url>
//   existing  one PreparedStatement runs before ALTER TABLE t ADD COLUMN and
//             three times after it, on the same connection;
//   new       two connections run it inside transactions open at once (so
//             both backends of a pool of two prepare it), the table changes,
//             and three new connections run it.
// The URL carries user, sslmode and, for a direct connection, options with
// the tenant's search_path.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

public class PgjdbcStale {
    static final String QUERY = "select * from t where id = ?";
    static final String DDL = "ALTER TABLE t ADD COLUMN extra int NOT NULL DEFAULT 7";

    static String url;

    static Connection connect() throws SQLException {
        Connection c = DriverManager.getConnection(url);
        c.setAutoCommit(true);
        return c;
    }

    static void step(String name, PreparedStatement ps) {
        try {
            ps.setInt(1, 1);
            List<String> rows = new ArrayList<>();
            try (ResultSet rs = ps.executeQuery()) {
                int n = rs.getMetaData().getColumnCount();
                while (rs.next()) {
                    List<String> row = new ArrayList<>();
                    for (int i = 1; i <= n; i++) {
                        row.add("\"" + rs.getString(i) + "\"");
                    }
                    rows.add("[" + String.join(", ", row) + "]");
                }
            }
            System.out.println("STEP " + name + " ok [" + String.join(", ", rows) + "]");
        } catch (SQLException e) {
            System.out.println("STEP " + name + " error " + e.getClass().getSimpleName() + " " + e.getSQLState());
            System.out.println("NOTE " + name + " " + e.getMessage().replace('\n', ' '));
        }
        System.out.flush();
    }

    static void ddl() throws SQLException {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute(DDL);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: PgjdbcStale <scenario> <jdbc-url>");
            System.exit(2);
        }
        url = args[1];
        switch (args[0]) {
            case "existing": {
                try (Connection c = connect(); PreparedStatement ps = c.prepareStatement(QUERY)) {
                    step("before", ps);
                    ddl();
                    for (int i = 1; i <= 3; i++) {
                        step("after" + i, ps);
                    }
                }
                break;
            }
            case "new": {
                Connection a = connect(), b = connect();
                a.setAutoCommit(false);
                b.setAutoCommit(false);
                for (Connection c : new Connection[] {a, b}) {
                    try (PreparedStatement ps = c.prepareStatement(QUERY)) {
                        ps.setInt(1, 1);
                        ps.executeQuery().close();
                    }
                }
                a.commit();
                b.commit();
                a.close();
                b.close();
                ddl();
                for (int i = 1; i <= 3; i++) {
                    try (Connection c = connect(); PreparedStatement ps = c.prepareStatement(QUERY)) {
                        step("new" + i, ps);
                    }
                }
                break;
            }
            default:
                System.err.println("unknown scenario " + args[0]);
                System.exit(2);
        }
        System.out.println("DONE");
    }
}
