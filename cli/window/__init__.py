"""`cajasync window`: the synchronizer window (Textual), the seed's screen at the till.

Every action here calls the same library functions as the CLI commands; nothing in this
package talks to the broker or the databases by itself.

* `context.py`     what every part of the window shares (the till's engine, settings, zone);
* `app.py`         the frame: options list, action buttons, bottom panel, status bar;
* `views.py`       what the main area shows for each option (records tables);
* `operations.py`  the main area's operations tables (Ventas..., Operaciones Pendientes);
* `records.py`     "Comparar registros": the record-level diff and a record on both sides;
* `tools.py`       the Herramientas menu's screens (prune, purge synced operations).

The frame's own parts, beside `app.py`: `command.py` (the click command, no Textual at
import), `menu.py` (the options and their count lines), `actions.py` (Obtener datos,
Transmitir, Actualizar Datos in threads, with progress and Cancelar), `status.py` (the
status bar's probe), `help.py` (keys, buttons and the commands they correspond to).
"""
