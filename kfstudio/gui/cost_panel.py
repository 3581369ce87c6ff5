from PySide6.QtWidgets import QWidget
class CostPanel(QWidget):
    def set_graph(self, g): pass
    def set_teacher(self, t): pass
    def schedule_refresh(self): pass
